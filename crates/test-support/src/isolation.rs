use std::process::Command;

use storage::redis_cluster::{RedisCluster, RedisSettings};

use crate::TestRabbit;

/// Names of its own for a service binary a test starts: a Redis key prefix and RabbitMQ
/// exchange/queue names, so it neither reads nor writes what a running stack (or another
/// test) uses. `cleanup` removes both.
pub struct Isolation {
    pub redis_prefix: String,
    pub rabbit: TestRabbit,
}

impl Isolation {
    pub async fn new() -> Self {
        Self {
            redis_prefix: format!("t{}", crate::unique_name()),
            rabbit: TestRabbit::declared().await,
        }
    }

    /// Points a service command at these names.
    pub fn apply(&self, command: &mut Command) {
        command
            .env("KEYMETER_REDIS_PREFIX", &self.redis_prefix)
            .env("KEYMETER_AMQP_PREFIX", self.rabbit.topology_prefix());
    }

    pub async fn cleanup(self) {
        let cluster = RedisCluster::new(RedisSettings::new(crate::redis_nodes()))
            .expect("redis cluster settings");
        crate::delete_prefix(&cluster, &self.redis_prefix).await;
        self.rabbit.cleanup().await;
    }
}
