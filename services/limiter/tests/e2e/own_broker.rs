//! A limiter on the shared Redis Cluster with a RabbitMQ of the test's own, which the test
//! may stop, hang or restart without disturbing other tests.

use std::net::SocketAddr;
use std::process::Command;

use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{Private, PrivateStores, TEST_PEPPER};

pub struct OwnBroker {
    pub stores: PrivateStores,
    pub redis: RedisCluster,
    pub layout: KeyLayout,
    /// Where the limiter of `limiter_command` listens.
    pub addr: SocketAddr,
}

impl OwnBroker {
    pub fn start() -> Self {
        let addr = test_support::free_addr();
        let stores = PrivateStores::start_some(
            [
                &test_support::free_addr(),
                &addr,
                &test_support::free_addr(),
            ],
            Private {
                postgres: false,
                rabbitmq: true,
                redis: false,
            },
        );
        Self {
            stores,
            redis: RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap(),
            layout: KeyLayout::new(format!("t{}", test_support::unique_name())),
            addr,
        }
    }

    /// `limiter serve` on `addr`, this test's Redis prefix and its own broker.
    pub fn limiter_command(&self) -> Command {
        let mut command = test_support::service_command(crate::BINARY);
        command
            .arg("serve")
            .env("KEYMETER_LIMITER_LISTEN", self.addr.to_string())
            .env(
                "KEYMETER_REDIS_NODES",
                test_support::redis_nodes().join(","),
            )
            .env("KEYMETER_REDIS_PREFIX", self.layout.prefix())
            .env("KEYMETER_AMQP_URL", &self.stores.amqp_url)
            .env("KEYMETER_PEPPER", TEST_PEPPER);
        command
    }

    /// Deletes the test's Redis keys; dropping the stores stops the broker.
    pub async fn cleanup(self) {
        test_support::delete_prefix(&self.redis, self.layout.prefix()).await;
    }
}
