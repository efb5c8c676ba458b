//! The check script: every limit and the credits of one key in one EVALSHA, for one check
//! or for several checks of the same key judged in a row.

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

/// Runs the check script for one check.
pub async fn check(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    request: CheckRequest<'_>,
) -> Result<CheckOutcome, RedisClusterError> {
    let key = KeyLimits {
        key_id: request.key_id,
        limits: request.limits,
        credits: request.credits,
    };
    let mut outcomes = check_many(cluster, layout, key, &[request.cost]).await?;
    outcomes
        .pop()
        .ok_or_else(|| RedisClusterError::Config("the check script answered no check".into()))
}

/// What every check of one key is judged against.
#[derive(Debug, Clone, Copy)]
pub struct KeyLimits<'a> {
    pub key_id: Uuid,
    pub limits: &'a [Limit],
    pub credits: Option<&'a CreditsConfig>,
}

/// Runs the check script once for several checks of one key, judged one after the other
/// in the order of `costs` (each sees what the ones before it spent); one outcome per cost.
pub async fn check_many(
    cluster: &RedisCluster,
    layout: &KeyLayout,
    key: KeyLimits<'_>,
    costs: &[u64],
) -> Result<Vec<CheckOutcome>, RedisClusterError> {
    let mut keys = Vec::with_capacity(key.limits.len() + 1);
    keys.push(layout.credits(key.key_id));
    keys.extend(
        key.limits
            .iter()
            .map(|l| layout.limit_counter(key.key_id, l)),
    );
    let refill = key.credits.and_then(|c| c.refill.as_ref());
    let mut args: Vec<String> = Vec::with_capacity(4 + 4 * key.limits.len() + costs.len());
    args.push(if key.credits.is_some() { "1" } else { "0" }.to_owned());
    args.push(refill.map_or(0, |r| r.amount).to_string());
    args.push(refill.map_or(0, |r| r.interval_ms).to_string());
    args.push(key.limits.len().to_string());
    for limit in key.limits {
        args.push(algorithm_name(limit.algorithm).to_owned());
        args.push(limit.limit.to_string());
        args.push(limit.window_ms.to_string());
        args.push(limit.capacity().to_string());
    }
    args.extend(costs.iter().map(u64::to_string));
    let reply: Vec<i64> = CHECK.run(cluster, &keys, &args).await?;
    if reply == [-1] {
        return Err(RedisClusterError::CreditsLost);
    }
    let per_check = 4 + 2 * key.limits.len();
    if reply.len() != per_check * costs.len() {
        return Err(malformed(&reply));
    }
    reply
        .chunks_exact(per_check)
        .map(|one| parse_reply(one, key.limits.len()))
        .collect()
}

fn malformed(reply: &[i64]) -> RedisClusterError {
    RedisClusterError::Config(format!("unexpected check reply {reply:?}"))
}

fn parse_reply(reply: &[i64], limits: usize) -> Result<CheckOutcome, RedisClusterError> {
    if reply.len() != 4 + 2 * limits {
        return Err(malformed(reply));
    }
    let verdict = match reply[0] {
        0 => Verdict::Allowed,
        1 => Verdict::RateLimited,
        2 => Verdict::CreditsExhausted,
        _ => return Err(malformed(reply)),
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
