//! The in-process L1 cache of key records: bounded, with a TTL, and with short-lived
//! "no such key" entries so a flood of made-up (but well-formed) keys costs one Redis read
//! per key per negative TTL. Concurrent misses for one key share one Redis read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::KeyRecord;
use moka::Expiry;
use moka::future::Cache;

use crate::metrics::counters;

#[derive(Debug, Clone)]
pub enum Cached {
    Known(Arc<KeyRecord>),
    Unknown,
}

struct TtlByKind {
    known: Duration,
    unknown: Duration,
}

impl Expiry<String, Cached> for TtlByKind {
    fn expire_after_create(&self, _key: &String, value: &Cached, _at: Instant) -> Option<Duration> {
        Some(match value {
            Cached::Known(_) => self.known,
            Cached::Unknown => self.unknown,
        })
    }
}

pub struct KeyCache {
    cache: Cache<String, Cached>,
    /// Refusals remembered per key id; cleared with the key.
    pub denials: crate::deny_cache::DenyCache,
}

impl KeyCache {
    pub fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(TtlByKind {
                    known: ttl,
                    unknown: negative_ttl,
                })
                .support_invalidation_closures()
                .build(),
            denials: crate::deny_cache::DenyCache::new(capacity),
        }
    }

    /// The cached answer for a key hash, or `load`'s (cached for next time).
    pub async fn get_or_load<F, E>(&self, key_hash: &str, load: F) -> Result<Cached, Arc<E>>
    where
        F: std::future::Future<Output = Result<Cached, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(hit) = self.cache.get(key_hash).await {
            counters().cache_memory.increment(1);
            return Ok(hit);
        }
        counters().cache_redis.increment(1);
        // Boxed: the loading future is large and rare, and every check's future would
        // otherwise carry (and move) its size.
        Box::pin(self.cache.try_get_with(key_hash.to_owned(), load)).await
    }

    /// Drops every cached secret of `key_id`, and every "no such key" answer (the change may
    /// be that key's creation).
    pub fn invalidate_key(&self, key_id: uuid::Uuid) {
        let dropped = self
            .cache
            .invalidate_entries_if(move |_, cached| match cached {
                Cached::Known(record) => record.key_id == key_id,
                Cached::Unknown => true,
            });
        if let Err(error) = dropped {
            tracing::error!(%error, "could not drop a changed key; forgetting everything");
            self.cache.invalidate_all();
        }
        // After the record: a check in between would judge the old record again.
        self.denials.forget(key_id);
    }

    /// Drops the record cached for one secret, so its next check reads Redis again.
    pub async fn invalidate_secret(&self, key_hash: &str) {
        self.cache.invalidate(key_hash).await;
    }

    pub fn invalidate_all(&self) {
        self.denials.forget_all();
        self.cache.invalidate_all();
    }
}
