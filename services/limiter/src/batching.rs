//! Checks of one key that arrive while that key already has its calls to Redis in flight
//! wait, and go together in the next call: one EVALSHA judges them one after the other
//! (`check_many`), each seeing what the ones before it spent, so the answers are those of
//! separate calls in that order. A hot key then costs Redis and this process one script
//! call per batch instead of one per check; a key with room for another call is sent at
//! once, so a quiet key waits for nothing.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use domain::KeyRecord;
use storage::redis_cluster::check::{self, CheckOutcome, KeyLimits};
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisClusterError};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::metrics::counters;

pub type Reply = Result<CheckOutcome, Arc<RedisClusterError>>;

pub struct CheckBatcher {
    redis: RedisCluster,
    layout: KeyLayout,
    /// Script calls one key may have in flight at once from this process.
    calls_per_key: usize,
    /// Checks one script call judges at most, so one call never holds Redis for long.
    max_batch: usize,
    keys: Mutex<HashMap<Uuid, KeyQueue>>,
}

/// A key is in the map while it has a call in flight.
#[derive(Default)]
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

impl CheckBatcher {
    pub fn new(
        redis: RedisCluster,
        layout: KeyLayout,
        calls_per_key: usize,
        max_batch: usize,
    ) -> Self {
        Self {
            redis,
            layout,
            calls_per_key: calls_per_key.max(1),
            max_batch: max_batch.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Judges one check of `record`'s key against its limits and credits.
    pub async fn check(self: &Arc<Self>, record: Arc<KeyRecord>, cost: u64) -> Reply {
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
        // up) must not strand the checks waiting behind its call.
        if let Some(first) = start_call {
            tokio::spawn(Arc::clone(self).send(key_id, vec![first]));
        }
        answer.await.unwrap_or_else(|_| {
            Err(Arc::new(RedisClusterError::Config(
                "the check was dropped before Redis answered".into(),
            )))
        })
    }

    /// Sends `batch`, then whatever has queued up for the key meanwhile, until nothing has.
    async fn send(self: Arc<Self>, key_id: Uuid, mut batch: Vec<Waiting>) {
        loop {
            self.call(batch).await;
            batch = self.next_batch(key_id);
            if batch.is_empty() {
                return;
            }
        }
    }

    async fn call(&self, batch: Vec<Waiting>) {
        let Some(first) = batch.first() else {
            return;
        };
        let record = Arc::clone(&first.record);
        let key = KeyLimits {
            key_id: record.key_id,
            limits: &record.limits,
            credits: record.credits.as_ref(),
        };
        let costs: Vec<u64> = batch.iter().map(|w| w.cost).collect();
        counters().script_calls.increment(1);
        // In traces, the call belongs to the check that opened the batch.
        let judged = check::check_many(&self.redis, &self.layout, key, &costs)
            .instrument(first.span.clone())
            .await;
        // A send fails only when the caller is gone; its check was judged all the same,
        // as it would have been had it been alone.
        match judged {
            Ok(outcomes) => {
                for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = waiting.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for waiting in batch {
                    let _ = waiting.reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }

    /// The next checks of the key that share one record (a batch is judged against one
    /// version of the key's limits), at most `max_batch`; empty when none wait, and then
    /// this call's slot is given up.
    fn next_batch(&self, key_id: Uuid) -> Vec<Waiting> {
        let mut keys = self.lock();
        let Some(queue) = keys.get_mut(&key_id) else {
            return Vec::new();
        };
        let Some(first) = queue.waiting.front() else {
            queue.in_flight = queue.in_flight.saturating_sub(1);
            if queue.in_flight == 0 {
                keys.remove(&key_id);
            }
            return Vec::new();
        };
        let record = Arc::clone(&first.record);
        let same = queue
            .waiting
            .iter()
            .take(self.max_batch)
            .take_while(|w| Arc::ptr_eq(&w.record, &record))
            .count();
        queue.waiting.drain(..same).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, KeyQueue>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
