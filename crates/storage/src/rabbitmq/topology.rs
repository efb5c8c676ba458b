use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use super::AmqpError;

/// The exchange and queue names of API.md. Tests give each their own `prefix`, so parallel
/// tests never share a queue; production uses no prefix.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    prefix: String,
}

/// Usage batches carry this routing key from `keymeter.usage` to its queue.
pub const USAGE_ROUTING_KEY: &str = "usage";

impl Topology {
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    pub fn usage_exchange(&self) -> String {
        self.name("keymeter.usage")
    }

    pub fn usage_queue(&self) -> String {
        self.name("keymeter.usage.ingest")
    }

    pub fn dead_letter_exchange(&self) -> String {
        self.name("keymeter.usage.dlx")
    }

    pub fn dead_letter_queue(&self) -> String {
        self.name("keymeter.usage.dead")
    }

    pub fn keys_exchange(&self) -> String {
        self.name("keymeter.keys")
    }

    /// Declares everything (idempotent): the usage exchange and its quorum queue, whose
    /// rejected messages go to the dead-letter exchange and queue, and the key-event fanout.
    pub async fn declare(&self, channel: &Channel) -> Result<(), AmqpError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead_letter_queue().into(),
                durable_queue,
                quorum_arguments(None),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        channel
            .exchange_declare(
                self.usage_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.usage_queue().into(),
                durable_queue,
                quorum_arguments(Some(&self.dead_letter_exchange())),
            )
            .await?;
        channel
            .queue_bind(
                self.usage_queue().into(),
                self.usage_exchange().into(),
                USAGE_ROUTING_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        channel
            .exchange_declare(
                self.keys_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Removes every queue and exchange of this topology (test clean-up).
    pub async fn delete(&self, channel: &Channel) -> Result<(), AmqpError> {
        for queue in [self.usage_queue(), self.dead_letter_queue()] {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            self.usage_exchange(),
            self.dead_letter_exchange(),
            self.keys_exchange(),
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

fn quorum_arguments(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(exchange) = dead_letter_exchange {
        arguments.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(exchange.into()),
        );
    }
    arguments
}
