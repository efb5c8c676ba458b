//! Drops cached keys when key-admin announces a change on the `keymeter.keys` fanout. Each
//! instance binds its own exclusive queue; while RabbitMQ is away the cache TTL bounds how
//! stale a record can be, and the task reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use domain::KeyEvent;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use storage::rabbitmq::{AmqpError, RabbitLink};
use tokio_util::sync::CancellationToken;

use crate::key_cache::KeyCache;

pub async fn run(link: Arc<RabbitLink>, keys: Arc<KeyCache>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = listen(&link, &keys) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, retry_in = ?backoff, "key events unavailable; the cache TTL bounds staleness");
        }
        // Events may have been missed while away: forget everything cached.
        keys.invalidate_all();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn listen(link: &RabbitLink, keys: &KeyCache) -> Result<(), AmqpError> {
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
