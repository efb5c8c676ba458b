//! Refusals remembered in process: a key refused at cost `c` until `t` is refused again at any
//! cost ≥ `c` until `t`, without asking Redis.
//!
//! Why this never refuses a request that Redis would let through: the script's retry time is
//! a lower bound on when a request of that cost can pass, for every algorithm. Other requests
//! only consume (a fixed window's count, a log's entries, a GCRA's TAT only grow until the
//! window or time moves them); the sliding window's retry is capped at the next window
//! start, where its estimate drops; credits are only cached when a refill is due at a known
//! time. What can make a key pass earlier is an admin change (new limits, more credits), and
//! the key event for it clears the key here.

use std::time::{Duration, Instant};

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
}

impl DenyCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    /// A remembered refusal that covers a request of `cost` now, with its times brought up to date.
    pub fn covering(&self, key_id: Uuid, cost: u64) -> Option<Denial> {
        let denial = self.cache.get(&key_id)?;
        let now = Instant::now();
        if cost < denial.min_cost || now >= denial.until {
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

    /// Remembers a refusal the script answered.
    pub fn remember(&self, key_id: Uuid, code: Code, cost: u64, outcome: &CheckOutcome) {
        if outcome.retry_after_ms == 0 {
            return;
        }
        let until = Instant::now() + Duration::from_millis(outcome.retry_after_ms);
        let min_cost = match self.cache.get(&key_id) {
            Some(existing) if existing.until >= until => return,
            _ => cost,
        };
        self.cache.insert(
            key_id,
            Denial {
                code,
                until,
                min_cost,
                outcome: outcome.clone(),
            },
        );
    }

    pub fn forget(&self, key_id: Uuid) {
        self.cache.invalidate(&key_id);
    }

    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}
