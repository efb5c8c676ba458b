//! key-admin as an operator runs it: the real binary, real stores, over HTTP.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod commands;
mod config_errors;
mod secrets;
mod serve;

use std::net::SocketAddr;
use std::process::Command;

use test_support::{Isolation, TEST_PEPPER, TestDb, service_command};

pub const BINARY: &str = env!("CARGO_BIN_EXE_key-admin");
pub const BOOTSTRAP_TOKEN: &str = "bootstrap-token-for-tests-0123456789abcdef";

/// `key-admin serve` on a free port against the test's own schema, Redis prefix and
/// RabbitMQ names.
pub fn serve_command(db: &TestDb, isolation: &Isolation) -> (Command, SocketAddr) {
    let addr = test_support::free_addr();
    let mut command = service_command(BINARY);
    command
        .arg("serve")
        .env("KEYMETER_ADMIN_LISTEN", addr.to_string())
        .env("KEYMETER_DATABASE_URL", &db.url)
        .env(
            "KEYMETER_REDIS_NODES",
            test_support::redis_nodes().join(","),
        )
        .env("KEYMETER_AMQP_URL", test_support::amqp_url())
        .env("KEYMETER_PEPPER", TEST_PEPPER)
        .env("KEYMETER_BOOTSTRAP_ADMIN_TOKEN", BOOTSTRAP_TOKEN);
    isolation.apply(&mut command);
    (command, addr)
}
