use storage::rabbitmq::{Connection, RabbitSettings, Topology, connect};

/// A RabbitMQ connection and a topology whose names carry this test's prefix.
pub struct TestRabbit {
    pub connection: Connection,
    pub topology: Topology,
}

impl TestRabbit {
    pub async fn declared() -> Self {
        let settings = RabbitSettings {
            url: crate::amqp_url(),
        };
        let connection = connect(&settings, "keymeter-test")
            .await
            .expect("connect to RabbitMQ (is the local stack up?)");
        let topology = Topology::with_prefix(format!("test-{}.", crate::unique_name()));
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("declare topology");
        Self {
            connection,
            topology,
        }
    }

    pub async fn cleanup(&self) {
        let channel = self.connection.create_channel().await.expect("channel");
        self.topology
            .delete(&channel)
            .await
            .expect("delete topology");
    }
}
