//! Drops cached keys when key-admin announces a change on the `keymeter.keys` fanout. Each
//! instance binds its own exclusive queue; while RabbitMQ is away the cache TTL bounds how
//! stale a record can be, and the task reconnects with backoff. Events missed while away
//! are unknown, so the whole cache is dropped when the link goes and again once the queue
//! is bound anew (records read in between may predate a missed event).

use std::sync::Arc;
use std::time::Duration;

use domain::KeyEvent;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use storage::rabbitmq::{AmqpError, RabbitLink};
use tokio_util::sync::CancellationToken;

use crate::key_cache::KeyCache;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub async fn run(link: Arc<RabbitLink>, keys: Arc<KeyCache>, shutdown: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = listen(&link, &keys, &mut backoff) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, retry_in = ?backoff, "key events unavailable; the cache TTL bounds staleness");
        }
        keys.invalidate_all();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Binds a queue and drops each changed key until the link fails. Once bound, the backoff
/// starts over: a link that worked is retried soon after its next failure.
async fn listen(
    link: &RabbitLink,
    keys: &KeyCache,
    backoff: &mut Duration,
) -> Result<(), AmqpError> {
    let connection = link.connection().await?;
    let channel = connection.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            link.topology().keys_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut deliveries = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    keys.invalidate_all();
    *backoff = FIRST_BACKOFF;
    tracing::info!("listening for key events");
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        match KeyEvent::decode(&delivery.data) {
            Ok(event) => {
                keys.invalidate_key(event.key_id);
                metrics::counter!("keymeter_key_events_total").increment(1);
            }
            Err(error) => tracing::warn!(%error, "unreadable key event ignored"),
        }
    }
    Ok(())
}
