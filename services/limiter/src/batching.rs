//! Checks of one key that arrive while that key already has its calls to Redis in flight
//! wait, and go together in the next call: one EVALSHA judges them one after the other
//! (`check_many`), each seeing what the ones before it spent, so the answers are those of
//! separate calls in that order. A hot key then costs Redis and this process one script
//! call per batch instead of one per check; a key with room for another call is sent at
//! once, so a quiet key waits for nothing.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use domain::KeyRecord;
use storage::redis_cluster::check::{self, CheckOutcome, CheckRequest, KeyLimits};
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisClusterError};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::breaker::Breaker;
use crate::metrics::counters;

pub type Reply = Result<CheckOutcome, Arc<RedisClusterError>>;

pub struct CheckBatcher {
    redis: RedisCluster,
    layout: KeyLayout,
    /// Told once per script call, not once per check it judged.
    breaker: Arc<Breaker>,
    /// Script calls one key may have in flight at once from this process; 0 turns batching
    /// off (every check its own call, made by its caller).
    calls_per_key: usize,
    /// Checks one script call judges at most, so one call never holds Redis for long.
    max_batch: usize,
    keys: Mutex<HashMap<Uuid, KeyQueue>>,
    calls: AtomicU64,
}

/// A key is in the map while it has a call in flight.
struct KeyQueue {
    in_flight: usize,
    waiting: VecDeque<Waiting>,
}

struct Waiting {
    record: Arc<KeyRecord>,
    cost: u64,
    reply: oneshot::Sender<Reply>,
    /// The caller's span (its request's, when tracing is on).
    span: tracing::Span,
}

impl Waiting {
    /// Whether a batch may judge this check against `first`'s limits and credits; both
    /// wait in one key's queue (the two secrets of a key in its rotation grace are
    /// different records with the same limits).
    fn same_limits(&self, first: &KeyRecord) -> bool {
        self.record.limits == first.limits && self.record.credits == first.credits
    }
}

impl CheckBatcher {
    pub fn new(
        redis: RedisCluster,
        layout: KeyLayout,
        breaker: Arc<Breaker>,
        calls_per_key: usize,
        max_batch: usize,
    ) -> Self {
        Self {
            redis,
            layout,
            breaker,
            calls_per_key,
            max_batch: max_batch.max(1),
            keys: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        }
    }

    /// Script calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Judges one check of `record`'s key against its limits and credits.
    pub async fn check(self: &Arc<Self>, record: Arc<KeyRecord>, cost: u64) -> Reply {
        if self.calls_per_key == 0 {
            return self.call_alone(&record, cost).await;
        }
        let key_id = record.key_id;
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            record,
            cost,
            reply,
            span: tracing::Span::current(),
        };
        let start_call = {
            let mut keys = self.lock();
            match keys.entry(key_id) {
                Entry::Occupied(mut queue) => {
                    let queue = queue.get_mut();
                    if queue.in_flight < self.calls_per_key && queue.waiting.is_empty() {
                        queue.in_flight += 1;
                        Some(waiting)
                    } else {
                        queue.waiting.push_back(waiting);
                        None
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(KeyQueue {
                        in_flight: 1,
                        waiting: VecDeque::new(),
                    });
                    Some(waiting)
                }
            }
        };
        // The calls run in tasks of their own: a caller that goes away (a client that hangs
        // up) must not strand the checks waiting behind its call. They run on the caller's
        // runtime (its HTTP worker): on the process's main runtime every check paid two
        // cross-thread wake-ups, 30 % of the rate with many keys (measured). If that worker
        // stops first at shutdown, the slot's drop guard answers the waiting checks.
        if let Some(first) = start_call {
            let slot = Slot {
                batcher: Arc::clone(self),
                key_id,
                released: false,
            };
            tokio::spawn(slot.send(vec![first]));
        }
        answer.await.unwrap_or_else(|_| {
            Err(Arc::new(RedisClusterError::Config(
                "the check was dropped before Redis answered".into(),
            )))
        })
    }

    /// One check, one call, no queue and no task: what batching costs nothing for.
    async fn call_alone(&self, record: &KeyRecord, cost: u64) -> Reply {
        let request = CheckRequest {
            key_id: record.key_id,
            cost,
            limits: &record.limits,
            credits: record.credits.as_ref(),
        };
        self.count_call();
        let judged = check::check(&self.redis, &self.layout, request).await;
        self.report(&judged);
        judged.map_err(Arc::new)
    }

    /// Runs one script call for `batch` and answers each check; Redis' error if it failed.
    async fn call(&self, batch: Vec<Waiting>) -> Result<(), Arc<RedisClusterError>> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let record = Arc::clone(&first.record);
        let key = KeyLimits {
            key_id: record.key_id,
            limits: &record.limits,
            credits: record.credits.as_ref(),
        };
        let costs: Vec<u64> = batch.iter().map(|w| w.cost).collect();
        self.count_call();
        // In traces, the call belongs to the check that opened the batch.
        let judged = check::check_many(&self.redis, &self.layout, key, &costs)
            .instrument(first.span.clone())
            .await;
        self.report(&judged);
        // A send fails only when the caller is gone; its check was judged all the same,
        // as it would have been had it been alone.
        match judged {
            Ok(outcomes) => {
                for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = waiting.reply.send(Ok(outcome));
                }
                Ok(())
            }
            Err(error) => {
                let error = Arc::new(error);
                for waiting in batch {
                    let _ = waiting.reply.send(Err(Arc::clone(&error)));
                }
                Err(error)
            }
        }
    }

    fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        counters().script_calls.increment(1);
    }

    /// The breaker hears once per script call, however many checks it judged.
    fn report<T>(&self, judged: &Result<T, RedisClusterError>) {
        match judged {
            Ok(_) => self.breaker.succeeded(),
            Err(_) => self.breaker.failed(),
        }
    }

    /// The next checks of the key that share one set of limits, at most `max_batch`;
    /// checks whose callers are gone are dropped unjudged (nobody would count their usage).
    /// Empty when none wait, and then the caller's call slot is given up.
    fn next_batch(&self, key_id: Uuid) -> Vec<Waiting> {
        let mut keys = self.lock();
        let Some(queue) = keys.get_mut(&key_id) else {
            return Vec::new();
        };
        queue.waiting.retain(|w| !w.reply.is_closed());
        let Some(first) = queue.waiting.front() else {
            queue.in_flight = queue.in_flight.saturating_sub(1);
            if queue.in_flight == 0 {
                keys.remove(&key_id);
            }
            return Vec::new();
        };
        let first = Arc::clone(&first.record);
        let same = queue
            .waiting
            .iter()
            .take(self.max_batch)
            .take_while(|w| w.same_limits(&first))
            .count();
        queue.waiting.drain(..same).collect()
    }

    /// After a failed call: every check still waiting for the key gets the same error at
    /// once, instead of each batch waiting out its own Redis timeout.
    fn fail_waiting(&self, key_id: Uuid, error: &Arc<RedisClusterError>) {
        let waiting: Vec<Waiting> = match self.lock().get_mut(&key_id) {
            Some(queue) => queue.waiting.drain(..).collect(),
            None => Vec::new(),
        };
        for w in waiting {
            let _ = w.reply.send(Err(Arc::clone(error)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, KeyQueue>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One call slot of a key, held by the task that sends its batches. If that task ends
/// without giving the slot up (a panic, or its runtime shut down), dropping it forgets the
/// key's queue, which answers every waiting check with "dropped", so none waits forever.
struct Slot {
    batcher: Arc<CheckBatcher>,
    key_id: Uuid,
    released: bool,
}

impl Slot {
    /// Sends `batch`, then whatever has queued up for the key meanwhile, until nothing has.
    async fn send(mut self, mut batch: Vec<Waiting>) {
        loop {
            if let Err(error) = self.batcher.call(batch).await {
                self.batcher.fail_waiting(self.key_id, &error);
            }
            batch = self.batcher.next_batch(self.key_id);
            if batch.is_empty() {
                self.released = true;
                return;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.released {
            self.batcher.lock().remove(&self.key_id);
        }
    }
}
