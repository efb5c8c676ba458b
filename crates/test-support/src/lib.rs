//! Fixtures for integration tests: each test gets its own Postgres schema, Redis hash tag
//! and RabbitMQ names, so tests run in parallel against one set of servers and leave
//! nothing behind. Addresses come from the same `KEYMETER_*` variables the services read.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod database;
mod isolation;
mod otlp;
mod private_stores;
mod process;
mod rabbit;
mod redis;

pub use database::{RelayLockHeld, TestDb};
pub use isolation::Isolation;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use private_stores::{Private, PrivateStores};
pub use process::{
    ServiceProcess, free_addr, free_port, run_to_exit, service_command, workspace_binary,
};
pub use rabbit::TestRabbit;
pub use redis::{
    TestRedis, cluster_masters, delete_prefix, delete_prefix_on, dump_prefix, kill_node, master_of,
    replicas_of,
};

/// Reads a setting the way the local stack exports it, with the stack's default.
pub fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn database_url() -> String {
    setting(
        "KEYMETER_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/keymeter",
    )
}

pub fn redis_nodes() -> Vec<String> {
    setting(
        "KEYMETER_REDIS_NODES",
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002",
    )
    .split(',')
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty())
    .collect()
}

/// A pepper for tests (64 hex characters); never used outside them.
pub const TEST_PEPPER: &str = "7465737420706570706572206f6e6c7920666f722074657374732121212121ab";

pub fn amqp_url() -> String {
    setting("KEYMETER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// A short unique name fragment for one test.
pub fn unique_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
