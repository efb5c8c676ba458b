//! The in-process L1 cache of key records: bounded, with a TTL, and with short-lived
//! "no such key" entries so a flood of made-up (but well-formed) keys costs one Redis read
//! per key per negative TTL. Concurrent misses for one key share one Redis read.
//!
//! A key event must reach every cached secret of its key, but the cache is keyed by secret
//! hash. Instead of scanning the cache, each event gets a number: an entry remembers how many
//! events there had been when its load began, and a hit on an entry older than the latest
//! event asks the small `changed` map whether its key id changed since. That costs one atomic
//! read per hit while nothing changes, and one map read for older entries. (moka's
//! `invalidate_entries_if` made every read walk every pending event: 50 000 events during a
//! plan change cut a limiter from 48 K to 12.8 K checks/s.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use domain::KeyRecord;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::{Expiry, sync};
use uuid::Uuid;

use crate::metrics::counters;

#[derive(Debug, Clone)]
pub enum Cached {
    Known(Arc<KeyRecord>),
    Unknown,
}

#[derive(Debug, Clone)]
struct Entry {
    cached: Cached,
    /// The number of events handled when its load began.
    loaded_after: u64,
}

struct TtlByKind {
    known: Duration,
    unknown: Duration,
}

impl Expiry<String, Entry> for TtlByKind {
    fn expire_after_create(&self, _key: &String, value: &Entry, _at: Instant) -> Option<Duration> {
        Some(match value.cached {
            Cached::Known(_) => self.known,
            Cached::Unknown => self.unknown,
        })
    }
}

/// Loads run within the Redis timeouts; this covers one that began before an event and
/// ended after it, whose entry then lives a TTL from its end.
const LONGEST_LOAD: Duration = Duration::from_secs(60);

pub struct KeyCache {
    cache: Cache<String, Entry>,
    /// Key events handled so far (each `invalidate_key` and `invalidate_all` is one).
    events: Arc<AtomicU64>,
    /// For each changed key id, the number of its latest event, kept as long as an entry
    /// loaded before it can live.
    changed: sync::Cache<Uuid, u64>,
    /// The number of the latest event that made every older entry stale.
    all_changed: Arc<AtomicU64>,
    /// Refusals remembered per key id; cleared with the key.
    pub denials: crate::deny_cache::DenyCache,
}

impl KeyCache {
    pub fn new(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        let events = Arc::new(AtomicU64::new(0));
        let all_changed = Arc::new(AtomicU64::new(0));
        let changed = {
            let events = Arc::clone(&events);
            let all_changed = Arc::clone(&all_changed);
            sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl + LONGEST_LOAD)
                // Least recently used goes first; the default policy may refuse a new entry
                // instead, and a refused change would be lost without a trace.
                .eviction_policy(EvictionPolicy::lru())
                // More changed keys than it holds: an evicted change must still count, so
                // every entry loaded before now is stale.
                .eviction_listener(move |_key_id, _n, cause| {
                    if cause == RemovalCause::Size {
                        all_changed.fetch_max(events.load(Ordering::Acquire), Ordering::AcqRel);
                    }
                })
                .build()
        };
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(TtlByKind {
                    known: ttl,
                    unknown: negative_ttl,
                })
                .build(),
            events,
            changed,
            all_changed,
            denials: crate::deny_cache::DenyCache::new(capacity),
        }
    }

    /// The cached answer for a key hash, or the answer of a `load()` (cached for next time).
    pub async fn get_or_load<L, F, E>(&self, key_hash: &str, load: L) -> Result<Cached, Arc<E>>
    where
        L: Fn() -> F,
        F: std::future::Future<Output = Result<Cached, E>>,
        E: Send + Sync + 'static,
    {
        let loaded_after = self.events.load(Ordering::Acquire);
        if let Some(hit) = self.cache.get(key_hash).await {
            if self.is_current(&hit) {
                counters().cache_memory.increment(1);
                return Ok(hit.cached);
            }
            self.cache.invalidate(key_hash).await;
        }
        counters().cache_redis.increment(1);
        let entry = self.load_shared(key_hash, loaded_after, load()).await?;
        // This check joined a load that began before an event it must see (or found the
        // entry of one): once more, so a revoke is never answered from a record read before.
        if entry.loaded_after < loaded_after && !self.is_current(&entry) {
            self.cache.invalidate(key_hash).await;
            return Ok(self
                .load_shared(key_hash, loaded_after, load())
                .await?
                .cached);
        }
        Ok(entry.cached)
    }

    /// Loads and caches, or waits for a load of the same key already under way.
    async fn load_shared<F, E>(
        &self,
        key_hash: &str,
        loaded_after: u64,
        load: F,
    ) -> Result<Entry, Arc<E>>
    where
        F: std::future::Future<Output = Result<Cached, E>>,
        E: Send + Sync + 'static,
    {
        let load = async move {
            load.await.map(|cached| Entry {
                cached,
                loaded_after,
            })
        };
        // Boxed: the loading future is large and rare, and every check's future would
        // otherwise carry (and move) its size.
        Box::pin(self.cache.try_get_with(key_hash.to_owned(), load)).await
    }

    fn is_current(&self, entry: &Entry) -> bool {
        if entry.loaded_after == self.events.load(Ordering::Acquire) {
            return true;
        }
        if self.all_changed.load(Ordering::Acquire) > entry.loaded_after {
            return false;
        }
        match &entry.cached {
            Cached::Known(record) => self
                .changed
                .get(&record.key_id)
                .is_none_or(|event| event <= entry.loaded_after),
            // The change may be this key's creation.
            Cached::Unknown => false,
        }
    }

    /// Makes every cached secret of `key_id` stale, and every "no such key" answer. Called
    /// by the one task that reads key events: two callers racing for one key could leave
    /// the smaller number in `changed`.
    pub fn invalidate_key(&self, key_id: Uuid) {
        let event = self.events.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.insert(key_id, event);
        // After the record: a check in between would judge the old record again.
        self.denials.forget(key_id);
    }

    /// Drops the record cached for one secret, so its next check reads Redis again.
    pub async fn invalidate_secret(&self, key_hash: &str) {
        self.cache.invalidate(key_hash).await;
    }

    pub fn invalidate_all(&self) {
        let event = self.events.fetch_add(1, Ordering::AcqRel) + 1;
        // Also catches a load that began before and is not in the cache yet.
        self.all_changed.fetch_max(event, Ordering::AcqRel);
        self.denials.forget_all();
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use domain::events::V1;

    use super::*;

    fn known(key_id: Uuid) -> Cached {
        Cached::Known(Arc::new(KeyRecord {
            v: V1,
            key_id,
            plan_id: Uuid::nil(),
            owner_id: None,
            enabled: true,
            revoked: false,
            expires_at: None,
            limits: vec![],
            credits: None,
            metadata: serde_json::json!({}),
        }))
    }

    fn cache(capacity: u64) -> KeyCache {
        KeyCache::new(capacity, Duration::from_secs(600), Duration::from_secs(600))
    }

    /// Counts the loads of one key hash.
    struct Loads(AtomicUsize);

    impl Loads {
        fn new() -> Self {
            Self(AtomicUsize::new(0))
        }

        async fn get(&self, keys: &KeyCache, hash: &str, answer: Cached) -> Cached {
            let load = || async {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(answer.clone())
            };
            match keys.get_or_load(hash, load).await {
                Ok(cached) => cached,
                Err(never) => match *never {},
            }
        }

        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_changed_key_is_read_again_and_the_others_stay_cached() {
        let keys = cache(100);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (loads_a, loads_a2, loads_b) = (Loads::new(), Loads::new(), Loads::new());
        loads_a.get(&keys, "a", known(a)).await;
        loads_a2.get(&keys, "a-rotated", known(a)).await;
        loads_b.get(&keys, "b", known(b)).await;

        keys.invalidate_key(a);
        for _ in 0..3 {
            loads_a.get(&keys, "a", known(a)).await;
            loads_a2.get(&keys, "a-rotated", known(a)).await;
            loads_b.get(&keys, "b", known(b)).await;
        }

        assert_eq!(
            loads_a.count(),
            2,
            "both secrets of the changed key are read again, once"
        );
        assert_eq!(loads_a2.count(), 2);
        assert_eq!(loads_b.count(), 1, "another key stays cached");
    }

    #[tokio::test]
    async fn a_record_loaded_while_its_key_changed_is_read_again() {
        let keys = cache(100);
        let a = Uuid::now_v7();
        let loads = AtomicUsize::new(0);
        // The event arrives between the Redis read and the cache insert.
        let racing = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            keys.invalidate_key(a);
            Ok::<_, std::convert::Infallible>(known(a))
        };
        assert!(keys.get_or_load("a", racing).await.is_ok());

        let again = Loads::new();
        again.get(&keys, "a", known(a)).await;
        again.get(&keys, "a", known(a)).await;
        assert_eq!(
            again.count(),
            1,
            "the raced record is not trusted, the reloaded one is"
        );
    }

    #[tokio::test]
    async fn no_such_key_answers_are_dropped_at_any_event() {
        let keys = cache(100);
        let loads = Loads::new();
        loads.get(&keys, "made-up", Cached::Unknown).await;
        loads.get(&keys, "made-up", Cached::Unknown).await;
        assert_eq!(loads.count(), 1, "a negative answer is cached");

        keys.invalidate_key(Uuid::now_v7());
        loads.get(&keys, "made-up", Cached::Unknown).await;
        assert_eq!(
            loads.count(),
            2,
            "the event may have been this key's creation"
        );
    }

    #[tokio::test]
    async fn more_changed_keys_than_the_cache_holds_make_every_older_entry_stale() {
        let keys = cache(4);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (loads_a, loads_b) = (Loads::new(), Loads::new());
        loads_a.get(&keys, "a", known(a)).await;
        loads_b.get(&keys, "b", known(b)).await;

        keys.invalidate_key(a);
        for _ in 0..20 {
            keys.invalidate_key(Uuid::now_v7());
        }
        keys.changed.run_pending_tasks();
        assert!(keys.changed.get(&a).is_none(), "a's change was evicted");

        loads_a.get(&keys, "a", known(a)).await;
        loads_b.get(&keys, "b", known(b)).await;
        assert_eq!(loads_a.count(), 2, "an evicted change still counts");
        assert_eq!(
            loads_b.count(),
            2,
            "so every entry older than it is read again"
        );
    }

    #[tokio::test]
    async fn a_check_that_joins_a_load_begun_before_its_keys_event_reads_again() {
        let keys = cache(100);
        let a = Uuid::now_v7();
        let revoked = || {
            let Cached::Known(record) = known(a) else {
                unreachable!()
            };
            Cached::Known(Arc::new(KeyRecord {
                revoked: true,
                ..(*record).clone()
            }))
        };
        let gate = tokio::sync::Notify::new();
        let later_loads = AtomicUsize::new(0);
        // The first check's Redis read, from before the revoke, is slow to come back.
        let first = keys.get_or_load("a", || async {
            gate.notified().await;
            Ok::<_, std::convert::Infallible>(known(a))
        });
        // The revoke's event arrives; a second check of the key joins the read under way.
        let second = async {
            tokio::task::yield_now().await;
            keys.invalidate_key(a);
            keys.get_or_load("a", || async {
                later_loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(revoked())
            })
            .await
        };
        let release = async {
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            gate.notify_one();
        };
        let (first, second, ()) = tokio::join!(first, second, release);

        assert!(
            matches!(first, Ok(Cached::Known(record)) if !record.revoked),
            "the first check began before the event"
        );
        assert_eq!(
            later_loads.load(Ordering::SeqCst),
            1,
            "the second read again"
        );
        assert!(
            matches!(second, Ok(Cached::Known(record)) if record.revoked),
            "and sees the revoke"
        );
    }

    #[tokio::test]
    async fn invalidate_all_covers_a_load_in_flight() {
        let keys = cache(100);
        let a = Uuid::now_v7();
        let racing = || async {
            keys.invalidate_all();
            Ok::<_, std::convert::Infallible>(known(a))
        };
        assert!(keys.get_or_load("a", racing).await.is_ok());

        let again = Loads::new();
        again.get(&keys, "a", known(a)).await;
        assert_eq!(again.count(), 1);
    }
}
