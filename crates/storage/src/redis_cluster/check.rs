//! The check script: every limit and the credits of one key in one EVALSHA.

use std::sync::LazyLock;

use domain::{Algorithm, CreditsConfig, Limit};
use uuid::Uuid;

use super::projection::KeyLayout;
use super::{LuaScript, RedisCluster, RedisClusterError};

static CHECK: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("check", include_str!("lua/check.lua")));

/// What the limiter asks about one request.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    pub key_id: Uuid,
    pub cost: u64,
    pub limits: &'a [Limit],
    pub credits: Option<&'a CreditsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    RateLimited,
    CreditsExhausted,
}

/// One limit after the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub remaining: u64,
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub verdict: Verdict,
    /// For a refusal: when a retry may pass.
    pub retry_after_ms: u64,
    /// The Redis node's clock, in ms since the epoch.
    pub now_ms: u64,
    pub credits_remaining: Option<u64>,
    /// In the order of the request's limits.
    pub limits: Vec<LimitState>,
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::SlidingLog => "sliding_log",
        Algorithm::SlidingWindow => "sliding_window",
        Algorithm::TokenBucket => "token_bucket",
        Algorithm::FixedWindow => "fixed_window",
    }
}

/// Runs the check script.
pub async fn check(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    request: CheckRequest<'_>,
) -> Result<CheckOutcome, RedisClusterError> {
    let mut keys = Vec::with_capacity(request.limits.len() + 1);
    keys.push(layout.credits(request.key_id));
    keys.extend(
        request
            .limits
            .iter()
            .map(|l| layout.limit_counter(request.key_id, l)),
    );
    let refill = request.credits.and_then(|c| c.refill.as_ref());
    let mut args: Vec<String> = Vec::with_capacity(5 + 4 * request.limits.len());
    args.push(request.cost.to_string());
    args.push(if request.credits.is_some() { "1" } else { "0" }.to_owned());
    args.push(refill.map_or(0, |r| r.amount).to_string());
    args.push(refill.map_or(0, |r| r.interval_ms).to_string());
    args.push(request.limits.len().to_string());
    for limit in request.limits {
        args.push(algorithm_name(limit.algorithm).to_owned());
        args.push(limit.limit.to_string());
        args.push(limit.window_ms.to_string());
        args.push(limit.capacity().to_string());
    }
    let reply: Vec<i64> = CHECK.run(cluster, &keys, &args).await?;
    parse_reply(&reply, request.limits.len())
}

fn parse_reply(reply: &[i64], limits: usize) -> Result<CheckOutcome, RedisClusterError> {
    let malformed = || RedisClusterError::Config(format!("unexpected check reply {reply:?}"));
    if reply.len() != 4 + 2 * limits {
        return Err(malformed());
    }
    let verdict = match reply[0] {
        0 => Verdict::Allowed,
        1 => Verdict::RateLimited,
        2 => Verdict::CreditsExhausted,
        _ => return Err(malformed()),
    };
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(CheckOutcome {
        verdict,
        retry_after_ms: non_negative(reply[1]),
        now_ms: non_negative(reply[2]),
        credits_remaining: (reply[3] >= 0).then(|| non_negative(reply[3])),
        limits: reply[4..]
            .chunks_exact(2)
            .map(|pair| LimitState {
                remaining: non_negative(pair[0]),
                reset_ms: non_negative(pair[1]),
            })
            .collect(),
    })
}
