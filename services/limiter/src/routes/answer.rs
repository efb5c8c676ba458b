//! The answer of a check: status, JSON body and rate-limit headers, built once for both
//! routes.

use std::fmt::Write;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, RETRY_AFTER};
use serde::Serialize;
use uuid::Uuid;

use crate::check::{Code, Decision};

// Built once: a header named by a string is parsed and checked on every response.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_KEYMETER_DEGRADED: HeaderName = HeaderName::from_static("x-keymeter-degraded");

/// The largest cost one request may ask for.
pub const MAX_COST: u64 = 1_000_000_000_000;

#[derive(Serialize)]
struct LimitAnswer<'a> {
    name: &'a str,
    limit: u64,
    remaining: u64,
    reset_ms: u64,
}

#[derive(Serialize)]
struct Body<'a> {
    allowed: bool,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    limits: Vec<LimitAnswer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits_remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

pub fn status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::RateLimited | Code::CreditsExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::MissingKey
        | Code::MalformedKey
        | Code::UnknownKey
        | Code::Disabled
        | Code::Expired
        | Code::Revoked => StatusCode::UNAUTHORIZED,
    }
}

fn seconds_up(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// A header value listing one member per item, `", "` between them (the shape of the IETF
/// `RateLimit-Policy` and `RateLimit` fields).
fn member_list<T>(items: &[T], member: impl Fn(&mut String, &T) -> std::fmt::Result) -> String {
    let mut list = String::with_capacity(32 * items.len());
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            list.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = member(&mut list, item);
    }
    list
}

/// The response for `decision` with `status`; `with_body` false leaves the body empty
/// (an allowed `/v1/authorize`).
pub fn respond(decision: &Decision, status: StatusCode, with_body: bool) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    let record = decision.record.as_deref();
    let limits: Vec<LimitAnswer> = match (record, &decision.outcome) {
        (Some(record), Some(outcome)) => record
            .limits
            .iter()
            .zip(&outcome.limits)
            .map(|(limit, state)| LimitAnswer {
                name: &limit.name,
                limit: limit.capacity(),
                remaining: state.remaining,
                reset_ms: state.reset_ms,
            })
            .collect(),
        _ => Vec::new(),
    };
    if let Some(record) = record
        && !record.limits.is_empty()
    {
        let policy = member_list(&record.limits, |out, l| {
            let (name, quota, window) = (&l.name, l.capacity(), seconds_up(l.window_ms));
            write!(out, "\"{name}\";q={quota};w={window}")
        });
        response.insert_header((RATELIMIT_POLICY, policy));
    }
    if !limits.is_empty() {
        let current = member_list(&limits, |out, l| {
            let (name, left, reset) = (l.name, l.remaining, seconds_up(l.reset_ms));
            write!(out, "\"{name}\";r={left};t={reset}")
        });
        response.insert_header((RATELIMIT, current));
        if let Some(tightest) = limits.iter().min_by_key(|l| l.remaining) {
            response.insert_header((X_RATELIMIT_LIMIT, tightest.limit));
            response.insert_header((X_RATELIMIT_REMAINING, tightest.remaining));
            response.insert_header((X_RATELIMIT_RESET, seconds_up(tightest.reset_ms)));
        }
    }
    let retry_after_ms = match decision.code {
        Code::RateLimited | Code::CreditsExhausted => {
            decision.outcome.as_ref().map(|o| o.retry_after_ms)
        }
        _ => None,
    };
    if let Some(ms) = retry_after_ms {
        response.insert_header((RETRY_AFTER, seconds_up(ms).max(1)));
    }
    if decision.degraded {
        response.insert_header((X_KEYMETER_DEGRADED, "redis-unavailable"));
    }
    if !with_body {
        return response.finish();
    }
    response.json(Body {
        allowed: decision.allowed(),
        code: decision.code.as_str(),
        key_id: record.map(|r| r.key_id),
        owner_id: record.and_then(|r| r.owner_id.as_deref()),
        metadata: record.map(|r| &r.metadata),
        limits,
        credits_remaining: decision.outcome.as_ref().and_then(|o| o.credits_remaining),
        retry_after_ms,
    })
}

/// 400 for a request that is not a check at all (bad JSON, bad cost).
pub fn bad_request(detail: String) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({
        "allowed": false,
        "code": "BAD_REQUEST",
        "detail": detail,
    }))
}
