//! `POST /v1/check` and `GET /v1/authorize`.

mod answer;
mod authorize;
mod check;

use std::sync::Arc;

use actix_web::web;

use crate::check::Checker;
use crate::settings::DenyStatus;

pub fn configure(
    checker: Arc<Checker>,
    deny_status: DenyStatus,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    let checker = web::Data::from(checker);
    let deny_status = web::Data::new(deny_status);
    move |config: &mut web::ServiceConfig| {
        config
            .app_data(checker.clone())
            .app_data(deny_status.clone())
            .app_data(web::PayloadConfig::new(check::MAX_BODY_BYTES))
            .route("/v1/check", web::post().to(check::check))
            // Gateways forward the client's method, and Envoy appends the client's path.
            .route("/v1/authorize", web::route().to(authorize::authorize))
            .route(
                "/v1/authorize/{path:.*}",
                web::route().to(authorize::authorize),
            );
    }
}

/// The key from `Authorization: Bearer` or `X-API-Key`.
fn key_from_headers(request: &actix_web::HttpRequest) -> Option<String> {
    let headers = request.headers();
    if let Some(value) = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_owned());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}
