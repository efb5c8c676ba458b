//! The limiter binary as an operator runs it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;

mod deny_cache;
mod failover;
mod fleet;
mod invalidation;
mod nginx;
mod own_broker;
mod shard_loss;
mod traces;
mod usage;

use test_support::{Isolation, ServiceProcess, TEST_PEPPER, run_to_exit, service_command};

pub const BINARY: &str = env!("CARGO_BIN_EXE_limiter");

/// A running service's `/metrics` text.
pub async fn metrics_text(service: &ServiceProcess) -> String {
    reqwest::get(service.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of a metric's samples in Prometheus text, over its lines that contain `label`
/// (such as `kind="timeout"`; "" for all of them).
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A key whose record is written into the projection under `layout`, as key-admin's relay
/// would write it, with these limits; with the projection's epoch markers, which key-admin
/// keeps there (without them a missing key is a store failure, not an unknown key).
pub async fn put_key(
    redis: &storage::redis_cluster::RedisCluster,
    layout: &storage::redis_cluster::KeyLayout,
    limits: Vec<domain::Limit>,
) -> (domain::ApiKey, uuid::Uuid) {
    let (key, record) = put_key_record(redis, layout, limits).await;
    (key, record.key_id)
}

/// As `put_key`, returning the record, which `rewrite_key` can write again changed.
pub async fn put_key_record(
    redis: &storage::redis_cluster::RedisCluster,
    layout: &storage::redis_cluster::KeyLayout,
    limits: Vec<domain::Limit>,
) -> (domain::ApiKey, domain::KeyRecord) {
    let key = domain::ApiKey::generate(&domain::KeyPrefix::default());
    let record = domain::KeyRecord {
        v: domain::events::V1,
        key_id: uuid::Uuid::now_v7(),
        plan_id: uuid::Uuid::now_v7(),
        owner_id: None,
        enabled: true,
        revoked: false,
        expires_at: None,
        limits,
        credits: None,
        metadata: serde_json::json!({}),
    };
    rewrite_key(redis, layout, &key, &record).await;
    storage::redis_cluster::projection::set_epoch(redis, layout, "test")
        .await
        .unwrap();
    (key, record)
}

/// Writes `key`'s record, as the relay does on a change; no key event is sent.
pub async fn rewrite_key(
    redis: &storage::redis_cluster::RedisCluster,
    layout: &storage::redis_cluster::KeyLayout,
    key: &domain::ApiKey,
    record: &domain::KeyRecord,
) {
    let pepper = domain::Pepper::from_hex(TEST_PEPPER).unwrap();
    storage::redis_cluster::projection::put_key(
        redis,
        layout,
        record,
        pepper.hash_key(key).as_str(),
        None,
    )
    .await
    .unwrap();
}

/// `limiter serve` on a free port with the test's own Redis prefix and RabbitMQ names.
pub fn serve_isolated(isolation: &Isolation) -> (Command, SocketAddr) {
    let (mut command, addr) = serve_command();
    isolation.apply(&mut command);
    (command, addr)
}

fn serve_command() -> (Command, SocketAddr) {
    let addr = test_support::free_addr();
    let mut command = service_command(BINARY);
    command
        .arg("serve")
        .env("KEYMETER_LIMITER_LISTEN", addr.to_string())
        .env(
            "KEYMETER_REDIS_NODES",
            test_support::redis_nodes().join(","),
        )
        .env("KEYMETER_AMQP_URL", test_support::amqp_url())
        .env("KEYMETER_PEPPER", TEST_PEPPER);
    (command, addr)
}

#[tokio::test]
async fn ready_with_the_cluster_and_rabbitmq_then_stops_on_sigterm() {
    let isolation = Isolation::new().await;
    let (command, addr) = serve_isolated(&isolation);
    let service = ServiceProcess::start(command, addr).await;
    let ready = reqwest::get(service.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body["checks"],
        serde_json::json!({"redis": "ok", "rabbitmq": "ok"})
    );
    let metrics = metrics_text(&service).await;
    assert!(metrics.contains(r#"service="limiter""#), "{metrics}");
    assert!(service.terminate().await.success());
    isolation.cleanup().await;
}

#[tokio::test]
async fn without_rabbitmq_the_limiter_stays_ready_but_degraded_and_checks_go_on() {
    let isolation = Isolation::new().await;
    let redis = storage::redis_cluster::RedisCluster::new(
        storage::redis_cluster::RedisSettings::new(test_support::redis_nodes()),
    )
    .unwrap();
    let layout = storage::redis_cluster::projection::KeyLayout::new(isolation.redis_prefix.clone());
    let (key, _) = put_key(
        &redis,
        &layout,
        vec![domain::Limit {
            name: "m".into(),
            algorithm: domain::Algorithm::FixedWindow,
            limit: 10,
            window_ms: 60_000,
            burst: None,
        }],
    )
    .await;
    let (mut command, addr) = serve_isolated(&isolation);
    command.env("KEYMETER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");
    let service = ServiceProcess::start(command, addr).await;
    let ready = reqwest::get(service.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["failing"], serde_json::json!([]));
    assert_eq!(body["degraded"], serde_json::json!(["rabbitmq"]));
    assert_eq!(body["checks"]["redis"], "ok");
    let check = reqwest::Client::new()
        .post(service.url("/v1/check"))
        .json(&serde_json::json!({"key": key.expose()}))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200, "checks go on without the broker");
    drop(service);
    isolation.cleanup().await;
}

#[tokio::test]
async fn readyz_is_503_naming_redis_when_the_cluster_is_away() {
    let isolation = Isolation::new().await;
    let (mut command, addr) = serve_isolated(&isolation);
    command.env("KEYMETER_REDIS_NODES", "redis://127.0.0.1:1");
    let service = ServiceProcess::start(command, addr).await;
    let ready = reqwest::get(service.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["failing"], serde_json::json!(["redis"]));
}

#[test]
fn refuses_to_start_without_a_valid_pepper() {
    let (mut command, _) = serve_command();
    command.env_remove("KEYMETER_PEPPER");
    let (status, stderr) = run_to_exit(command);
    assert_eq!(status.code(), Some(2));
    assert_eq!(
        stderr.trim_end(),
        "error: KEYMETER_PEPPER (--pepper) is required but not set"
    );

    let (mut command, _) = serve_command();
    command.env("KEYMETER_PEPPER", "xyz");
    let (status, stderr) = run_to_exit(command);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.starts_with("error: KEYMETER_PEPPER (--pepper) invalid value: must be 64 hex"),
        "{stderr}"
    );
}
