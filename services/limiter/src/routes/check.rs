use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::answer::{self, MAX_COST};
use super::key_from_headers;
use crate::check::Checker;

/// Check bodies are tiny; anything larger is not a check.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    key: Option<String>,
    cost: Option<u64>,
}

/// `POST /v1/check`: may this request go on? The key comes from the body, else from
/// `Authorization: Bearer` or `X-API-Key`; `cost` defaults to 1.
pub async fn check(
    request: HttpRequest,
    body: web::Bytes,
    checker: web::Data<Checker>,
) -> HttpResponse {
    let parsed: CheckBody = if body.iter().all(u8::is_ascii_whitespace) {
        CheckBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(error) => return answer::bad_request(format!("invalid JSON body: {error}")),
        }
    };
    let cost = parsed.cost.unwrap_or(1);
    if cost > MAX_COST {
        return answer::bad_request(format!("cost must be at most {MAX_COST}"));
    }
    let key = parsed.key.or_else(|| key_from_headers(&request));
    let decision = checker.check(key.as_deref(), cost).await;
    // Off at the default `info` level; with `limiter=debug` each answer is a log line (with
    // the request's trace id when tracing is on).
    tracing::debug!(code = decision.code.as_str(), cost, "check answered");
    answer::respond(&decision, answer::status_of(decision.code), true)
}
