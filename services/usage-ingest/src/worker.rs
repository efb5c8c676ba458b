//! The consume loop: take up to `max_batches` deliveries (waiting at most `linger` for more
//! once one arrived), count them in one transaction, ack after the commit. Postgres down:
//! nothing is acked and the same batches are tried again with backoff. RabbitMQ down: the
//! link reconnects with backoff and declares the topology again; deliveries not acked come
//! back and are recognised by their batch id.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::UsageBatch;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions};
use storage::rabbitmq::{Consumer, Delivery, RabbitLink, consume};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::poison::{self, Poison};
use crate::writer::Writer;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unacked deliveries the broker may send ahead.
    pub prefetch: u16,
    /// Most batches one transaction counts.
    pub max_batches: usize,
    /// How long to wait for more batches after the first one arrived.
    pub linger: Duration,
    /// How long a batch id is remembered; older batches are dead-lettered (see poison.rs).
    pub dedup_window: Duration,
    pub consumer_tag: String,
}

/// Backoff between retries of a store that failed: doubles from 100 ms up to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        wait
    }
}

/// Runs until `shutdown`; the batch in hand is counted and acked before returning.
pub async fn run(
    link: Arc<RabbitLink>,
    writer: Arc<Writer>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let (channel, consumer) = match open(&link, &settings).await {
            Ok(opened) => opened,
            Err(error) => {
                let wait = backoff.next();
                tracing::warn!(%error, ?wait, "cannot consume usage batches; retrying");
                metrics::counter!("keymeter_ingest_retries_total", "store" => "rabbitmq")
                    .increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        backoff = Backoff::new();
        tracing::info!(queue = %link.topology().usage_queue(), "consuming usage batches");
        consume_until_broken(&link, &writer, &settings, consumer, &shutdown).await;
        if shutdown.is_cancelled() {
            let _ = channel
                .basic_cancel(
                    settings.consumer_tag.as_str().into(),
                    BasicCancelOptions::default(),
                )
                .await;
            let _ = channel.close(200, "usage-ingest stopping".into()).await;
        }
    }
    tracing::info!("usage worker stopped");
}

async fn open(
    link: &RabbitLink,
    settings: &WorkerSettings,
) -> Result<(storage::rabbitmq::Channel, Consumer), storage::rabbitmq::AmqpError> {
    let connection = link.connection().await?;
    let channel = connection.create_channel().await?;
    let consumer = consume(
        &channel,
        &link.topology().usage_queue(),
        &settings.consumer_tag,
        settings.prefetch,
    )
    .await?;
    Ok((channel, consumer))
}

/// Consumes until the channel breaks or `shutdown`.
async fn consume_until_broken(
    link: &RabbitLink,
    writer: &Writer,
    settings: &WorkerSettings,
    mut consumer: Consumer,
    shutdown: &CancellationToken,
) {
    loop {
        let first = tokio::select! {
            // Shutdown first: a group left unacked by a stopped retry must not be acked by
            // the `multiple` ack of a later group.
            biased;
            _ = shutdown.cancelled() => return,
            next = tokio::time::timeout(Duration::from_secs(1), consumer.next()) => next,
        };
        let first = match first {
            // Nothing waiting: no batch is old.
            Err(_) => {
                metrics::gauge!("keymeter_ingest_lag_seconds").set(0.0);
                continue;
            }
            Ok(Some(Ok(delivery))) => delivery,
            Ok(Some(Err(error))) => {
                tracing::warn!(%error, "usage consumer failed; reconnecting");
                return;
            }
            Ok(None) => {
                tracing::warn!("usage consumer closed by the broker; reconnecting");
                return;
            }
        };
        let mut hand = vec![first];
        let mut broken = false;
        let deadline = Instant::now() + settings.linger;
        while hand.len() < settings.max_batches {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(Ok(delivery))) => hand.push(delivery),
                Ok(Some(Err(_)) | None) => {
                    broken = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let span = tracing::info_span!(
            target: storage::SPAN_TARGET,
            "rabbitmq.consume",
            otel.name = format!("consume {}", link.topology().usage_queue()),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.destination.name = link.topology().usage_queue(),
            messaging.batch.message_count = hand.len(),
        );
        let settled = handle(link, writer, settings, hand, shutdown)
            .instrument(span)
            .await;
        if !settled {
            // Stopped while retrying: the group stays unacked (the broker hands it out again
            // once the channel closes), and nothing more is taken from this channel.
            return;
        }
        if broken {
            tracing::warn!("usage consumer broke; reconnecting");
            return;
        }
    }
}

/// Dead-letters the poison, counts the rest in one transaction (retrying while Postgres
/// fails), then acks them all. Returns false when stopped before the group was settled.
async fn handle(
    link: &RabbitLink,
    writer: &Writer,
    settings: &WorkerSettings,
    hand: Vec<Delivery>,
    shutdown: &CancellationToken,
) -> bool {
    let mut good: Vec<(Delivery, UsageBatch)> = Vec::with_capacity(hand.len());
    for delivery in hand {
        match poison::judge(&delivery.data, Utc::now(), settings.dedup_window) {
            Ok(batch) => good.push((delivery, batch)),
            Err(reason) => dead_letter(link, &delivery, &reason).await,
        }
    }
    let mut backoff = Backoff::new();
    let written = loop {
        // A long Postgres outage can outlast the dedup window: judged again before each
        // try, a batch whose id may be pruned by now goes to the dead letters instead.
        let mut still_good = Vec::with_capacity(good.len());
        for (delivery, batch) in good {
            match poison::too_old(&batch, Utc::now(), settings.dedup_window) {
                None => still_good.push((delivery, batch)),
                Some(reason) => dead_letter(link, &delivery, &reason).await,
            }
        }
        good = still_good;
        if good.is_empty() {
            return true;
        }
        if let Some(oldest) = good.iter().filter_map(|(_, b)| poison::made_at(b)).min() {
            let lag = Utc::now().signed_duration_since(oldest);
            metrics::gauge!("keymeter_ingest_lag_seconds")
                .set(lag.num_milliseconds().max(0) as f64 / 1000.0);
        }
        let batches: Vec<&UsageBatch> = good.iter().map(|(_, batch)| batch).collect();
        match writer.write(&batches).await {
            Ok(written) => break written,
            Err(error) => {
                metrics::counter!("keymeter_ingest_retries_total", "store" => "postgres")
                    .increment(1);
                let wait = backoff.next();
                tracing::warn!(%error, ?wait, batches = batches.len(), "cannot count usage batches; retrying");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    metrics::counter!("keymeter_ingest_batches_total").increment(written.batches as u64);
    metrics::counter!("keymeter_ingest_entries_total").increment(written.entries as u64);
    metrics::counter!("keymeter_ingest_duplicates_total").increment(written.duplicates as u64);
    // Every delivery up to the last one on this channel is handled (counted here, acked
    // before, or dead-lettered), so one ack covers them all.
    if let Some((last, _)) = good.last() {
        match last.acker.ack(BasicAckOptions { multiple: true }).await {
            Ok(true) => {}
            // Counted but not acked: the redelivery is recognised by its batch id.
            Ok(false) => {
                tracing::warn!("channel closed before the ack; the redelivery will be skipped")
            }
            Err(error) => {
                tracing::warn!(%error, "ack after commit failed; the redelivery will be skipped")
            }
        }
    }
    true
}

async fn dead_letter(link: &RabbitLink, delivery: &Delivery, reason: &Poison) {
    if let Err(error) = poison::send_to_dead_letters(link, delivery, reason).await {
        tracing::warn!(%error, "could not dead-letter a poison message; it comes back");
    }
}
