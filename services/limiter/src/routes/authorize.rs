use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::answer::{self, MAX_COST};
use super::key_from_headers;
use crate::check::{Checker, Code};
use crate::settings::DenyStatus;

/// `GET /v1/authorize`: forward-auth for a gateway. Key from `Authorization: Bearer` or
/// `X-API-Key`, cost from `X-Keymeter-Cost`. Allowed: 200, empty body, and the key id and
/// owner for the upstream. Refused: the check's answer, or in `forbidden` mode 403 for a key
/// or a limit that refuses; a store outage stays 503 in both modes (never a 401's stand-in).
pub async fn authorize(
    request: HttpRequest,
    checker: web::Data<Checker>,
    deny_status: web::Data<DenyStatus>,
) -> HttpResponse {
    let cost = match request.headers().get("x-keymeter-cost") {
        None => 1,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(cost) if cost <= MAX_COST => cost,
            _ => {
                return answer::bad_request(format!(
                    "X-Keymeter-Cost must be a whole number from 0 to {MAX_COST}"
                ));
            }
        },
    };
    let key = key_from_headers(&request);
    let decision = checker.check(key.as_deref(), cost).await;
    let status = match (*deny_status.get_ref(), decision.code) {
        (_, Code::Ok) => StatusCode::OK,
        (DenyStatus::Forbidden, code) if code != Code::Unavailable => StatusCode::FORBIDDEN,
        (_, code) => answer::status_of(code),
    };
    let mut response = answer::respond(&decision, status, !decision.allowed());
    if decision.allowed()
        && let Some(record) = decision.record.as_deref()
    {
        let headers = response.headers_mut();
        if let Ok(value) = record.key_id.to_string().parse() {
            headers.insert(
                actix_web::http::header::HeaderName::from_static("x-keymeter-key-id"),
                value,
            );
        }
        if let Some(owner) = record.owner_id.as_deref()
            && let Ok(value) = owner.parse()
        {
            headers.insert(
                actix_web::http::header::HeaderName::from_static("x-keymeter-owner-id"),
                value,
            );
        }
    }
    response
}
