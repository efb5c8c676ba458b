//! Whether Redis still holds the projection key-admin writes. A key missing from Redis is
//! unknown (401) only while the projection's epoch marker is there. Without the marker Redis
//! has lost its data (restarted empty, flushed), every key would look unknown until
//! key-admin rebuilds it, and the check is answered by the failure policy instead: a store
//! outage is never a 401.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisClusterError};

pub struct ProjectionWatch {
    /// When the marker was last seen.
    seen: Mutex<Option<Instant>>,
    /// How long a sighting is trusted, so a flood of unknown keys costs Redis one more read
    /// per this long, not one per key. Data lost within it is noticed this much later.
    trust: Duration,
}

impl ProjectionWatch {
    pub fn new(trust: Duration) -> Self {
        Self {
            seen: Mutex::new(None),
            trust,
        }
    }

    /// Whether the projection is there: its marker was seen within `trust`, or is now.
    pub async fn present(
        &self,
        redis: &RedisCluster,
        layout: &KeyLayout,
    ) -> Result<bool, RedisClusterError> {
        let recently = self
            .seen
            .lock()
            .ok()
            .and_then(|seen| *seen)
            .is_some_and(|at| at.elapsed() < self.trust);
        if recently {
            return Ok(true);
        }
        let present = projection::epoch(redis, layout).await?.is_some();
        if present && let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Instant::now());
        }
        Ok(present)
    }
}
