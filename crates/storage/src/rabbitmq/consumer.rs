use lapin::options::{BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer, message::Delivery};

use super::AmqpError;

/// Starts a consumer with manual acks and at most `prefetch` unacked messages in flight.
pub async fn consume(
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> Result<Consumer, AmqpError> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    Ok(channel
        .basic_consume(
            queue.into(),
            consumer_tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// Rejects without requeue: the queue's dead-letter exchange takes the message, so a
/// message that can never be processed leaves the stream at once.
pub async fn dead_letter(delivery: &Delivery) -> Result<(), AmqpError> {
    delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await?;
    Ok(())
}
