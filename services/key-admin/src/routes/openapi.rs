//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the routes themselves.

use actix_web::{App, HttpResponse, web};
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_actix_web::AppExt;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keymeter admin API",
        description = "Plans, API keys, admin tokens, audit log and usage of keymeter. Every `/v1` route needs `Authorization: Bearer <admin token>` with the scope it names. Errors are `application/problem+json` (RFC 9457).",
    ),
    components(schemas(crate::error::Problem))
)]
struct BaseDocument;

/// The whole document: the base above plus every path registered by `routes::configure`.
pub fn document() -> Document {
    let (_, paths) = App::new()
        .into_utoipa_app()
        .configure(super::configure)
        .split_for_parts();
    let mut document = BaseDocument::openapi();
    document.merge(paths);
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "admin_token",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    document
}

pub async fn serve_document(document: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.get_ref().clone())
}
