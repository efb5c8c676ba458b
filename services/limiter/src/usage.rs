//! Usage, counted per (key, minute) in memory and published to `keymeter.usage` in batches
//! with publisher confirms. A request never waits on RabbitMQ. A batch keeps its `batch_id`
//! until the broker confirms it, so a retry after a lost confirm is recognised as the same
//! batch by usage-ingest. Memory is bounded: past `max_entries` waiting, the oldest batches
//! are dropped, counted in a metric and logged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::events::{MAX_BATCH_ENTRIES, V1};
use domain::{UsageBatch, UsageEntry};
use lapin::types::FieldTable;
use storage::rabbitmq::{AmqpError, RabbitLink, USAGE_ROUTING_KEY};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    allowed: u64,
    denied: u64,
    cost: u64,
}

/// The live aggregate that checks write into.
#[derive(Default)]
pub struct UsageAggregator {
    counts: Mutex<HashMap<(Uuid, i64), Counts>>,
}

impl UsageAggregator {
    /// Records one outcome at `at_ms`: Redis time when the script ran, the host's clock when
    /// it did not (a status refusal, or an answer by the failure policy).
    pub fn record(&self, key_id: Uuid, at_ms: u64, allowed: bool, cost: u64) {
        let minute = (at_ms / 60_000) as i64;
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        let entry = counts.entry((key_id, minute)).or_default();
        if allowed {
            entry.allowed += 1;
            entry.cost += cost;
        } else {
            entry.denied += 1;
        }
    }

    /// Takes everything counted so far as usage entries.
    fn take(&self) -> Vec<UsageEntry> {
        let drained = match self.counts.lock() {
            Ok(mut counts) => std::mem::take(&mut *counts),
            Err(_) => return Vec::new(),
        };
        drained
            .into_iter()
            .filter_map(|((key_id, minute), c)| {
                let minute: DateTime<Utc> = DateTime::from_timestamp(minute * 60, 0)?;
                Some(UsageEntry {
                    key_id,
                    minute,
                    allowed: c.allowed,
                    denied: c.denied,
                    cost: c.cost,
                })
            })
            .collect()
    }
}

/// Batches waiting for the broker's confirm, oldest first.
pub struct UsagePublisher {
    aggregator: Arc<UsageAggregator>,
    link: Arc<RabbitLink>,
    source: String,
    max_entries: usize,
    waiting: Mutex<VecDeque<UsageBatch>>,
}

impl UsagePublisher {
    pub fn new(
        aggregator: Arc<UsageAggregator>,
        link: Arc<RabbitLink>,
        source: String,
        max_entries: usize,
    ) -> Self {
        Self {
            aggregator,
            link,
            source,
            max_entries,
            waiting: Mutex::new(VecDeque::new()),
        }
    }

    /// Moves the aggregate into batches (bounded), then publishes the waiting batches in
    /// order until one fails.
    pub async fn flush(&self) -> Result<usize, AmqpError> {
        self.seal();
        let mut published = 0;
        loop {
            let next = match self.waiting.lock() {
                Ok(waiting) => waiting.front().cloned(),
                Err(_) => None,
            };
            let Some(batch) = next else {
                return Ok(published);
            };
            self.publish(&batch).await?;
            if let Ok(mut waiting) = self.waiting.lock() {
                waiting.pop_front();
            }
            published += batch.entries.len();
            metrics::counter!("keymeter_usage_entries_published_total")
                .increment(batch.entries.len() as u64);
        }
    }

    fn seal(&self) {
        let entries = self.aggregator.take();
        let Ok(mut waiting) = self.waiting.lock() else {
            return;
        };
        for chunk in entries.chunks(MAX_BATCH_ENTRIES) {
            waiting.push_back(UsageBatch {
                v: V1,
                batch_id: Uuid::now_v7(),
                source: self.source.clone(),
                entries: chunk.to_vec(),
            });
        }
        let mut buffered = entries_in(&waiting);
        while buffered > self.max_entries {
            let Some(dropped) = waiting.pop_front() else {
                break;
            };
            buffered -= dropped.entries.len();
            metrics::counter!("keymeter_usage_entries_dropped_total")
                .increment(dropped.entries.len() as u64);
            tracing::error!(
                batch_id = %dropped.batch_id,
                entries = dropped.entries.len(),
                "usage buffer full while RabbitMQ is away: dropped the oldest batch"
            );
        }
        metrics::gauge!("keymeter_usage_entries_buffered").set(buffered as f64);
    }

    async fn publish(&self, batch: &UsageBatch) -> Result<(), AmqpError> {
        let body = serde_json::to_vec(batch).unwrap_or_default();
        let publisher = self.link.publisher().await?;
        let exchange = self.link.topology().usage_exchange();
        let id = batch.batch_id.to_string();
        let sent = publisher
            .publish(
                &exchange,
                USAGE_ROUTING_KEY,
                &body,
                Some(&id),
                FieldTable::default(),
            )
            .await;
        if sent.is_err() {
            self.link.forget_publisher().await;
        }
        sent
    }

    /// Flushes every `interval` until `shutdown`, then flushes what is left, trying for at
    /// most `final_deadline`.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        final_deadline: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = self.flush().await {
                tracing::warn!(%error, "usage not published yet; kept for the next flush");
            }
        }
        // The whole of the last flush, attempts in progress included, ends by the deadline:
        // one attempt can wait on a connect and a confirm per batch, and the pod's grace
        // period is counted on this bound (deploy/k8s).
        let deadline = tokio::time::Instant::now() + final_deadline;
        loop {
            match tokio::time::timeout_at(deadline, self.flush()).await {
                Ok(Ok(_)) => {
                    tracing::info!("usage flushed before exit");
                    return;
                }
                Ok(Err(error)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(%error, "final usage flush failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, entries = self.waiting_entries(), "exiting with usage not published");
                    return;
                }
                Err(_) => {
                    tracing::error!(
                        entries = self.waiting_entries(),
                        "the final usage flush ran out of time: exiting with usage not published"
                    );
                    return;
                }
            }
        }
    }

    /// Usage entries sealed in batches and not yet confirmed by the broker.
    fn waiting_entries(&self) -> usize {
        self.waiting
            .lock()
            .map(|waiting| entries_in(&waiting))
            .unwrap_or(0)
    }
}

fn entries_in(batches: &VecDeque<UsageBatch>) -> usize {
    batches.iter().map(|b| b.entries.len()).sum()
}
