//! One check: shape and checksum (no I/O), the key's record (cache, then one Redis read,
//! which also tells a key nobody issued from one a Redis shard lost), its status, then every
//! limit and the credits in one script.

use std::sync::Arc;

use chrono::Utc;
use domain::{ApiKey, KeyRecord, Pepper};
use storage::redis_cluster::check::{CheckOutcome, Verdict};
use storage::redis_cluster::projection::{self, KeyLayout, StoredRecord};
use storage::redis_cluster::{RedisCluster, RedisClusterError};

use crate::batching::CheckBatcher;
use crate::breaker::Breaker;
use crate::key_cache::{Cached, KeyCache};
use crate::log_throttle::LogThrottle;
use crate::metrics::counters;
use crate::settings::FailurePolicy;
use crate::usage::UsageAggregator;

/// The answer codes of API.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok,
    RateLimited,
    CreditsExhausted,
    MissingKey,
    MalformedKey,
    UnknownKey,
    Disabled,
    Expired,
    Revoked,
    Unavailable,
}

impl Code {
    pub const ALL: [Code; 10] = [
        Code::Ok,
        Code::RateLimited,
        Code::CreditsExhausted,
        Code::MissingKey,
        Code::MalformedKey,
        Code::UnknownKey,
        Code::Disabled,
        Code::Expired,
        Code::Revoked,
        Code::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::RateLimited => "RATE_LIMITED",
            Code::CreditsExhausted => "CREDITS_EXHAUSTED",
            Code::MissingKey => "MISSING_KEY",
            Code::MalformedKey => "MALFORMED_KEY",
            Code::UnknownKey => "UNKNOWN_KEY",
            Code::Disabled => "DISABLED",
            Code::Expired => "EXPIRED",
            Code::Revoked => "REVOKED",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub code: Code,
    /// The key's record, when the key is known.
    pub record: Option<Arc<KeyRecord>>,
    /// The script's answer, when it ran.
    pub outcome: Option<CheckOutcome>,
    /// Allowed only because Redis could not be asked and the policy is fail-open.
    pub degraded: bool,
}

impl Decision {
    fn early(code: Code) -> Self {
        Self {
            code,
            record: None,
            outcome: None,
            degraded: false,
        }
    }

    pub fn allowed(&self) -> bool {
        self.code == Code::Ok
    }
}

pub struct Checker {
    pub redis: RedisCluster,
    pub layout: KeyLayout,
    pub pepper: Pepper,
    pub keys: Arc<KeyCache>,
    /// Runs the check script, one call for the checks of a key that arrive together.
    pub batcher: Arc<CheckBatcher>,
    pub failure_policy: FailurePolicy,
    pub usage: Arc<UsageAggregator>,
    /// Shared with the batcher, which reports each script call's result to it.
    pub breaker: Arc<Breaker>,
}

impl Checker {
    pub async fn check(&self, raw_key: Option<&str>, cost: u64) -> Decision {
        let decision = self.decide(raw_key, cost).await;
        counters().code(decision.code).increment(1);
        if let Some(record) = &decision.record {
            // Redis time when the script ran; this host's clock when it did not.
            let at_ms = decision.outcome.as_ref().map_or_else(
                || u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0),
                |o| o.now_ms,
            );
            self.usage
                .record(record.key_id, at_ms, decision.allowed(), cost);
        }
        decision
    }

    async fn decide(&self, raw_key: Option<&str>, cost: u64) -> Decision {
        let Some(raw_key) = raw_key.filter(|k| !k.is_empty()) else {
            return Decision::early(Code::MissingKey);
        };
        let Ok(key) = ApiKey::parse(raw_key) else {
            return Decision::early(Code::MalformedKey);
        };
        let hash = self.pepper.hash_key(&key);
        let key_hash = hash.as_str();
        let load = move || async move {
            if !self.breaker.allow() {
                return Err(RedisClusterError::Config("circuit breaker open".into()));
            }
            let stored = projection::get_key(&self.redis, &self.layout, key_hash).await;
            // A lost projection is still an answer from Redis.
            self.breaker.report(&stored);
            let stored = stored?;
            Ok::<_, RedisClusterError>(match stored {
                StoredRecord::Found(text) => match KeyRecord::decode(&text) {
                    Ok(record) => Cached::Known(Arc::new(record)),
                    Err(error) => {
                        return Err(RedisClusterError::UnreadableRecord(error.to_string()));
                    }
                },
                StoredRecord::Absent => Cached::Unknown,
                StoredRecord::Lost => return Err(RedisClusterError::ProjectionLost),
            })
        };
        let record = match self.keys.get_or_load(hash.as_str(), load).await {
            Ok(Cached::Known(record)) => record,
            Ok(Cached::Unknown) => return Decision::early(Code::UnknownKey),
            // Valid or made up, revoked or not, nobody can tell: 503 whatever the policy. Not
            // 401, as a store failure is never one; not allowed, as fail-open keeps known
            // keys working through an outage but cannot vouch for a key nobody can read.
            Err(error)
                if matches!(
                    *error,
                    RedisClusterError::ProjectionLost | RedisClusterError::UnreadableRecord(_)
                ) =>
            {
                static LOG: LogThrottle = LogThrottle::new();
                if let Some(left_out) = LOG.permit() {
                    tracing::warn!(%error, left_out, "a key whose record Redis cannot give");
                }
                return Decision::early(Code::Unavailable);
            }
            Err(error) => return self.store_failed(&*error, None),
        };
        let status = if record.revoked {
            Some(Code::Revoked)
        } else if !record.enabled {
            Some(Code::Disabled)
        } else if record.expires_at.is_some_and(|at| at <= Utc::now()) {
            Some(Code::Expired)
        } else {
            None
        };
        if let Some(code) = status {
            return Decision {
                code,
                record: Some(record),
                outcome: None,
                degraded: false,
            };
        }
        if let Some(denial) = self.keys.denials.covering(&record, cost) {
            counters().deny_cache_hits.increment(1);
            return Decision {
                code: denial.code,
                record: Some(record),
                outcome: Some(denial.outcome),
                degraded: false,
            };
        }
        if !self.breaker.allow() {
            return self.store_failed(&"circuit breaker open", Some(record));
        }
        counters().scripts.increment(1);
        let sent = self.keys.denials.sent();
        match self.batcher.check(Arc::clone(&record), cost).await {
            Ok(outcome) => {
                let code = match outcome.verdict {
                    Verdict::Allowed => Code::Ok,
                    Verdict::RateLimited => Code::RateLimited,
                    Verdict::CreditsExhausted => Code::CreditsExhausted,
                };
                if code != Code::Ok {
                    self.keys
                        .denials
                        .remember(&record, code, cost, &outcome, sent);
                }
                Decision {
                    code,
                    record: Some(record),
                    outcome: Some(outcome),
                    degraded: false,
                }
            }
            Err(error) => {
                if matches!(*error, RedisClusterError::CreditsLost) {
                    // The cached record may be older than the change that removed the
                    // balance (credits dropped, key deleted): read it again next time.
                    self.keys.invalidate_secret(hash.as_str()).await;
                }
                self.store_failed(&*error, Some(record))
            }
        }
    }

    /// Redis could not answer: the failure policy decides, never a 401.
    fn store_failed(
        &self,
        error: &dyn std::fmt::Display,
        record: Option<Arc<KeyRecord>>,
    ) -> Decision {
        static LOG: LogThrottle = LogThrottle::new();
        if let Some(left_out) = LOG.permit() {
            tracing::warn!(%error, policy = ?self.failure_policy, left_out, "redis unavailable for a check");
        }
        match self.failure_policy {
            FailurePolicy::Open => {
                counters().degraded.increment(1);
                Decision {
                    code: Code::Ok,
                    record,
                    outcome: None,
                    degraded: true,
                }
            }
            FailurePolicy::Closed => Decision {
                code: Code::Unavailable,
                record,
                outcome: None,
                degraded: false,
            },
        }
    }
}
