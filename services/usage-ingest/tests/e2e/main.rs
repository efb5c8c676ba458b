//! The usage-ingest binary as an operator runs it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod drill;
mod exactly_once;
mod sigterm;
mod traces;

use std::net::SocketAddr;
use std::process::Command;

use test_support::{Isolation, ServiceProcess, TestDb, run_to_exit, service_command};

const BINARY: &str = env!("CARGO_BIN_EXE_usage-ingest");

fn serve_command(db: &TestDb, isolation: &Isolation) -> (Command, SocketAddr) {
    let addr = test_support::free_addr();
    let mut command = service_command(BINARY);
    command
        .arg("serve")
        .env("KEYMETER_INGEST_LISTEN", addr.to_string())
        .env("KEYMETER_DATABASE_URL", &db.url)
        .env("KEYMETER_AMQP_URL", test_support::amqp_url());
    isolation.apply(&mut command);
    (command, addr)
}

#[tokio::test]
async fn ready_with_postgres_and_rabbitmq_then_stops_on_sigterm() {
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    let (command, addr) = serve_command(&db, &isolation);
    let service = ServiceProcess::start(command, addr).await;
    let ready = reqwest::get(service.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body["checks"],
        serde_json::json!({"postgres": "ok", "rabbitmq": "ok"})
    );
    assert!(service.terminate().await.success());
    isolation.cleanup().await;
}

#[tokio::test]
async fn readyz_is_503_naming_rabbitmq_when_the_broker_is_away() {
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    let (mut command, addr) = serve_command(&db, &isolation);
    command.env("KEYMETER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");
    let service = ServiceProcess::start(command, addr).await;
    let ready = reqwest::get(service.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["failing"], serde_json::json!(["rabbitmq"]));
    drop(service);
    isolation.cleanup().await;
}

#[test]
fn refuses_a_malformed_database_url() {
    let db_url = "postgres//no-scheme";
    let mut command = service_command(BINARY);
    command.args(["serve", "--database-url", db_url]);
    let (status, stderr) = run_to_exit(command);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr
            .starts_with("error: KEYMETER_DATABASE_URL (--database-url) invalid value: not a URL"),
        "{stderr}"
    );
}
