//! Checks of one key that arrive while that key already has its calls to Redis in flight
//! wait, and go together in the next call: one EVALSHA judges them one after the other
//! (`check_many`), each seeing what the ones before it spent, so the answers are those of
//! separate calls in that order. A hot key then costs Redis and this process one script
//! call per batch instead of one per check; a key with room for another call is sent at
//! once, so a quiet key waits for nothing. The check that finds its key with room makes
//! the call itself; only the checks that queued behind it are sent by a task. Each HTTP
//! worker thread batches its own checks (see `QueueId`).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

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
    /// Script calls one key may have in flight at once from one thread (HTTP worker); 0
    /// turns batching off (every check its own call, made by its caller).
    calls_per_key: usize,
    /// Checks one script call judges at most, so one call never holds Redis for long.
    max_batch: usize,
    keys: Mutex<HashMap<QueueId, KeyQueue>>,
    calls: AtomicU64,
}

/// A key's queue on one thread. Each HTTP worker (a one-thread runtime) batches its own
/// checks: a check answered by a call another worker made paid a cross-thread wake-up, and
/// the worker's Redis connection is its own too (`RedisCluster`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct QueueId {
    thread: ThreadId,
    key_id: Uuid,
}

impl QueueId {
    fn here(key_id: Uuid) -> Self {
        Self {
            thread: std::thread::current().id(),
            key_id,
        }
    }
}

/// A key is in the map while it has a call in flight from that thread.
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
        let queue_id = QueueId::here(record.key_id);
        let answer = {
            let mut keys = self.lock();
            match keys.entry(queue_id) {
                Entry::Occupied(mut queue) => {
                    let queue = queue.get_mut();
                    if queue.in_flight < self.calls_per_key && queue.waiting.is_empty() {
                        queue.in_flight += 1;
                        None
                    } else {
                        let (reply, answer) = oneshot::channel();
                        queue.waiting.push_back(Waiting {
                            record: Arc::clone(&record),
                            cost,
                            reply,
                            span: tracing::Span::current(),
                        });
                        Some(answer)
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(KeyQueue {
                        in_flight: 1,
                        waiting: VecDeque::new(),
                    });
                    None
                }
            }
        };
        match answer {
            Some(answer) => answer.await.unwrap_or_else(|_| {
                Err(Arc::new(RedisClusterError::Config(
                    "the check was dropped before Redis answered".into(),
                )))
            }),
            // A key with room for a call: this check makes it itself, with no task and no
            // channel, which is all a key that is rarely checked twice at once ever costs.
            None => {
                let slot = Slot::new(Arc::clone(self), queue_id, OnDrop::HandOver);
                let judged = self.call_alone(&record, cost).await;
                if let Err(error) = &judged {
                    self.fail_waiting(queue_id, error);
                }
                // The checks that queued behind this call go to a task of their own, so
                // this caller is answered now; with none queued the slot is given up.
                drop(slot);
                judged
            }
        }
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
        self.breaker.report(&judged);
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
        self.breaker.report(&judged);
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

    /// The next checks of the key that share one set of limits, at most `max_batch`;
    /// checks whose callers are gone are dropped unjudged (nobody would count their usage).
    /// Empty when none wait, and then the caller's call slot is given up.
    fn next_batch(&self, queue_id: QueueId) -> Vec<Waiting> {
        let mut keys = self.lock();
        let Some(queue) = keys.get_mut(&queue_id) else {
            return Vec::new();
        };
        queue.waiting.retain(|w| !w.reply.is_closed());
        let Some(first) = queue.waiting.front() else {
            queue.in_flight = queue.in_flight.saturating_sub(1);
            if queue.in_flight == 0 {
                keys.remove(&queue_id);
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
    fn fail_waiting(&self, queue_id: QueueId, error: &Arc<RedisClusterError>) {
        let waiting: Vec<Waiting> = match self.lock().get_mut(&queue_id) {
            Some(queue) => queue.waiting.drain(..).collect(),
            None => Vec::new(),
        };
        for w in waiting {
            let _ = w.reply.send(Err(Arc::clone(error)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueId, KeyQueue>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One call slot of a key, held by the check making an inline call or by the task that
/// sends the batches queued behind it.
struct Slot {
    batcher: Arc<CheckBatcher>,
    queue_id: QueueId,
    on_drop: OnDrop,
    /// Set by the sending task once its key's queue was empty and the slot given up.
    released: bool,
}

/// What a slot does, when it goes, with the checks waiting for its key.
#[derive(Clone, Copy)]
enum OnDrop {
    /// The inline caller's slot, after its call or when the caller's future is dropped
    /// mid-call (its worker shutting down, or anything that cancels a check; actix does
    /// not drop a handler whose client hung up): a task takes the slot over and sends the
    /// waiting checks; with none waiting the slot is given up. A call dropped mid-way
    /// tells the breaker nothing, as with batching off.
    HandOver,
    /// The sending task ended early (a panic, or its runtime shut down): the key's queue
    /// is forgotten, which answers every waiting check with "dropped", so none waits
    /// forever.
    Forget,
}

impl Slot {
    fn new(batcher: Arc<CheckBatcher>, queue_id: QueueId, on_drop: OnDrop) -> Self {
        Self {
            batcher,
            queue_id,
            on_drop,
            released: false,
        }
    }

    /// Sends `batch`, then whatever has queued up for the key meanwhile, until nothing has.
    async fn send(mut self, mut batch: Vec<Waiting>) {
        loop {
            if let Err(error) = self.batcher.call(batch).await {
                self.batcher.fail_waiting(self.queue_id, &error);
            }
            batch = self.batcher.next_batch(self.queue_id);
            if batch.is_empty() {
                self.released = true;
                return;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        match self.on_drop {
            OnDrop::HandOver => {
                let batch = self.batcher.next_batch(self.queue_id);
                if batch.is_empty() {
                    return;
                }
                let sender = Slot::new(Arc::clone(&self.batcher), self.queue_id, OnDrop::Forget);
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(sender.send(batch));
                    }
                    // No runtime to send them on: dropping the batch and the sender answers
                    // the batch and forgets the queue.
                    Err(_) => drop((batch, sender)),
                }
            }
            OnDrop::Forget => {
                self.batcher.lock().remove(&self.queue_id);
            }
        }
    }
}
