//! Whether Redis still holds the projection key-admin writes. A key missing from Redis is
//! unknown (401) only while the projection's epoch marker is there. Without the marker Redis
//! has lost its data (restarted empty, flushed) or key-admin is still rebuilding it, and a
//! key Redis does not hold may be valid or made up: it is answered 503 `UNAVAILABLE`
//! whatever the failure policy. Not 401, as a store outage is never one; not allowed, as
//! fail-open keeps known keys working through an outage but cannot vouch for a key nobody
//! can find.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisClusterError};

pub struct ProjectionWatch {
    /// When the marker was last looked for, and whether it was there.
    last: Mutex<Option<(Instant, bool)>>,
    /// How long an answer is trusted, so a flood of unknown keys costs Redis one more read
    /// per this long, not one per key, whether the marker is there or not. Data lost (or a
    /// rebuild finished) within it is noticed this much later.
    trust: Duration,
}

impl ProjectionWatch {
    pub fn new(trust: Duration) -> Self {
        Self {
            last: Mutex::new(None),
            trust,
        }
    }

    /// Whether the projection is there, as Redis said within `trust` or says now.
    pub async fn present(
        &self,
        redis: &RedisCluster,
        layout: &KeyLayout,
    ) -> Result<bool, RedisClusterError> {
        let recent = self
            .last
            .lock()
            .ok()
            .and_then(|last| *last)
            .filter(|(at, _)| at.elapsed() < self.trust);
        if let Some((_, present)) = recent {
            return Ok(present);
        }
        let present = projection::epoch(redis, layout).await?.is_some();
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), present));
        }
        Ok(present)
    }
}
