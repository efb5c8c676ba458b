//! Refusals remembered in process: a key refused at cost `c` until `t` is refused again at any
//! cost ≥ `c` until `t`, without asking Redis.
//!
//! Why this never refuses a request that Redis would let through: the script's retry time is
//! a lower bound on when a request of that cost can pass, for every algorithm. Other requests
//! only consume (a fixed window's count, a log's entries, a GCRA's TAT only grow until the
//! window or time moves them); the sliding window's retry is capped at the next window
//! start, where its estimate drops; credits are only cached when a refill is due at a known
//! time. What can make a key pass earlier is an admin change (new limits, more credits): the
//! key event for it clears the key here, and a refusal is only used for the limits and
//! credits it was judged against (a record reloaded with others does not match it).
//!
//! A refusal judged before a key event and remembered after it would undo the event: every
//! `forget` moves a generation on, and a refusal whose call started in an earlier generation
//! is not kept.
//!
//! The refusal runs from when its call was sent, not from when the answer came back: the
//! script's clock read is in between, so the window ends no later than Redis's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use domain::KeyRecord;

use moka::Expiry;
use moka::sync::Cache;
use storage::redis_cluster::check::CheckOutcome;
use uuid::Uuid;

use crate::check::Code;

#[derive(Debug, Clone)]
pub struct Denial {
    pub code: Code,
    pub until: Instant,
    /// The smallest cost refused until `until`.
    pub min_cost: u64,
    pub outcome: CheckOutcome,
    /// The record it was judged against: its limits and credits must still be the key's.
    judged: Arc<KeyRecord>,
}

/// Whether two records of a key limit it alike.
fn same_rules(a: &KeyRecord, b: &KeyRecord) -> bool {
    a.limits == b.limits && a.credits == b.credits
}

struct UntilExpiry;

impl Expiry<Uuid, Denial> for UntilExpiry {
    fn expire_after_create(&self, _key: &Uuid, value: &Denial, at: Instant) -> Option<Duration> {
        Some(value.until.saturating_duration_since(at))
    }

    fn expire_after_update(
        &self,
        _key: &Uuid,
        value: &Denial,
        at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(at))
    }
}

pub struct DenyCache {
    cache: Cache<Uuid, Denial>,
    generation: AtomicU64,
}

/// When a script call was sent, and the deny cache's generation then.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    at: Instant,
    generation: u64,
}

impl DenyCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// Taken just before a script call, for `remember`.
    pub fn sent(&self) -> Sent {
        Sent {
            at: Instant::now(),
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// A remembered refusal that covers a request of `cost` for `record` now, with its times
    /// brought up to date.
    pub fn covering(&self, record: &KeyRecord, cost: u64) -> Option<Denial> {
        let denial = self.cache.get(&record.key_id)?;
        let now = Instant::now();
        if cost < denial.min_cost || now >= denial.until || !same_rules(&denial.judged, record) {
            return None;
        }
        let left = denial.until.duration_since(now).as_millis() as u64;
        let mut outcome = denial.outcome.clone();
        let elapsed = outcome.retry_after_ms.saturating_sub(left);
        outcome.retry_after_ms = left.max(1);
        outcome.now_ms += elapsed;
        for limit in &mut outcome.limits {
            limit.reset_ms = limit.reset_ms.saturating_sub(elapsed);
        }
        Some(Denial { outcome, ..denial })
    }

    /// Remembers a refusal the script answered for `judged`, from a call sent at `sent`.
    pub fn remember(
        &self,
        judged: &Arc<KeyRecord>,
        code: Code,
        cost: u64,
        outcome: &CheckOutcome,
        sent: Sent,
    ) {
        if outcome.retry_after_ms == 0 || self.moved_on_since(sent) {
            return;
        }
        let key_id = judged.key_id;
        let until = sent.at + Duration::from_millis(outcome.retry_after_ms);
        let min_cost = match self.cache.get(&key_id) {
            Some(existing) if existing.until >= until && same_rules(&existing.judged, judged) => {
                return;
            }
            _ => cost,
        };
        self.cache.insert(
            key_id,
            Denial {
                code,
                until,
                min_cost,
                outcome: outcome.clone(),
                judged: Arc::clone(judged),
            },
        );
        // A forget between the check above and the insert: it may have missed this entry.
        if self.moved_on_since(sent) {
            self.cache.invalidate(&key_id);
        }
    }

    fn moved_on_since(&self, sent: Sent) -> bool {
        self.generation.load(Ordering::Acquire) != sent.generation
    }

    pub fn forget(&self, key_id: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(&key_id);
    }

    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use domain::events::V1;
    use domain::{Algorithm, Limit};
    use storage::redis_cluster::check::{LimitState, Verdict};

    use super::*;

    fn record(limit: u64) -> Arc<KeyRecord> {
        Arc::new(KeyRecord {
            v: V1,
            key_id: Uuid::nil(),
            plan_id: Uuid::nil(),
            owner_id: None,
            enabled: true,
            revoked: false,
            expires_at: None,
            limits: vec![Limit {
                name: "h".into(),
                algorithm: Algorithm::FixedWindow,
                limit,
                window_ms: 3_600_000,
                burst: None,
            }],
            credits: None,
            metadata: serde_json::json!({}),
        })
    }

    fn refused(retry_after_ms: u64) -> CheckOutcome {
        CheckOutcome {
            verdict: Verdict::RateLimited,
            retry_after_ms,
            now_ms: 0,
            credits_remaining: None,
            limits: vec![LimitState {
                remaining: 0,
                reset_ms: retry_after_ms,
            }],
        }
    }

    #[test]
    fn a_refusal_holds_only_for_the_limits_it_was_judged_against() {
        let cache = DenyCache::new(10);
        let old = record(100);
        cache.remember(&old, Code::RateLimited, 1, &refused(60_000), cache.sent());
        assert!(cache.covering(&old, 1).is_some());
        assert!(cache.covering(&old, 0).is_none(), "a smaller cost may pass");
        // The limit was raised; the record reloaded with it no longer matches the refusal.
        assert!(cache.covering(&record(1000), 1).is_none());
    }

    #[test]
    fn a_refusal_judged_before_a_key_event_is_not_kept() {
        let cache = DenyCache::new(10);
        let judged = record(100);
        let sent = cache.sent();
        // The key event arrives while the script call is in flight.
        cache.forget(judged.key_id);
        cache.remember(&judged, Code::RateLimited, 1, &refused(60_000), sent);
        assert!(cache.covering(&judged, 1).is_none());
    }

    #[test]
    fn the_refusal_runs_from_when_its_call_was_sent() {
        let cache = DenyCache::new(10);
        let judged = record(100);
        let sent = cache.sent();
        std::thread::sleep(Duration::from_millis(50));
        cache.remember(&judged, Code::RateLimited, 1, &refused(100), sent);
        // Not 100 ms from now: what is left of 100 ms from when it was sent (or nothing).
        let left = cache
            .covering(&judged, 1)
            .map_or(0, |d| d.outcome.retry_after_ms);
        assert!(left <= 50, "{left} ms left");
    }
}
