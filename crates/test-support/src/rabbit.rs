use storage::rabbitmq::{Connection, RabbitSettings, Topology, connect};

/// A RabbitMQ connection and a topology whose names carry this test's prefix.
pub struct TestRabbit {
    pub connection: Connection,
    pub topology: Topology,
    prefix: String,
}

impl TestRabbit {
    pub async fn declared() -> Self {
        let settings = RabbitSettings {
            url: crate::amqp_url(),
        };
        let connection = connect(&settings, "keymeter-test")
            .await
            .expect("connect to RabbitMQ (is the local stack up?)");
        let prefix = format!("test-{}.", crate::unique_name());
        let topology = Topology::with_prefix(prefix.clone());
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("declare topology");
        Self {
            connection,
            topology,
            prefix,
        }
    }

    /// The name prefix, as `KEYMETER_AMQP_PREFIX` takes it.
    pub fn topology_prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn cleanup(&self) {
        let channel = self.connection.create_channel().await.expect("channel");
        self.topology
            .delete(&channel)
            .await
            .expect("delete topology");
    }
}

impl TestRabbit {
    /// A private queue bound to this test's `keymeter.keys` fanout, consumed without acks,
    /// as a limiter instance would.
    pub async fn subscribe_key_events(&self) -> storage::rabbitmq::Consumer {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let channel = self.connection.create_channel().await.expect("channel");
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
            .await
            .expect("declare event queue");
        channel
            .queue_bind(
                queue.name().clone(),
                self.topology.keys_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind event queue");
        channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume events")
    }
}
