use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use tracing::Instrument;

use super::AmqpError;

/// Publishes persistent JSON on a channel in confirm mode; `publish` returns only once the
/// broker has taken responsibility for the message (stored in a queue).
#[derive(Clone)]
pub struct ConfirmedPublisher {
    channel: Channel,
    /// Longest wait for the broker's confirm: a publisher never hangs on a broker that
    /// stopped answering.
    confirm_timeout: std::time::Duration,
}

const PERSISTENT: u8 = 2;

impl ConfirmedPublisher {
    pub async fn open(connection: &Connection) -> Result<Self, AmqpError> {
        let timeout = std::time::Duration::from_secs(5);
        let channel = tokio::time::timeout(timeout, async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, AmqpError>(channel)
        })
        .await
        .map_err(|_| AmqpError::Timeout(timeout))??;
        Ok(Self {
            channel,
            confirm_timeout: std::time::Duration::from_secs(5),
        })
    }

    /// Sends `body` and waits for the broker's confirm. The message is `mandatory`: one that
    /// reaches no queue is an error instead of silently dropped.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: Option<&str>,
        headers: FieldTable,
    ) -> Result<(), AmqpError> {
        self.send(exchange, routing_key, body, message_id, headers, true)
            .await
    }

    /// Sends to a fanout whose subscribers come and go (key events): confirmed by the
    /// broker, but reaching no queue is fine, since then no cache holds the key.
    pub async fn broadcast(&self, exchange: &str, body: &[u8]) -> Result<(), AmqpError> {
        self.send(exchange, "", body, None, FieldTable::default(), false)
            .await
    }

    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: Option<&str>,
        headers: FieldTable,
        mandatory: bool,
    ) -> Result<(), AmqpError> {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        let sent = async {
            self.channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties,
                )
                .await?
                .await
        };
        let span = tracing::info_span!(
            target: crate::SPAN_TARGET,
            "rabbitmq.publish",
            otel.name = format!("publish {exchange}"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.destination.name = exchange,
        );
        let confirm = tokio::time::timeout(self.confirm_timeout, sent)
            .instrument(span)
            .await
            .map_err(|_| AmqpError::Timeout(self.confirm_timeout))??;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable(exchange.to_owned())),
            Confirmation::Nack(_) => Err(AmqpError::Nacked),
            Confirmation::NotRequested => Err(AmqpError::Nacked),
        }
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}
