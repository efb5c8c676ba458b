//! Every check counted exactly once, end to end with the real binaries: two limiters,
//! usage-ingest and key-admin, while the worker is SIGKILLed twice, RabbitMQ is restarted
//! and PostgreSQL is stopped for 10 s. The Postgres and RabbitMQ here are this test's own
//! (started by the stack script), so stopping them disturbs no other test.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use domain::{ApiKey, Pepper};
use serde_json::{Value, json};
use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{
    PrivateStores, ServiceProcess, TEST_PEPPER, free_port, run_to_exit, service_command,
    workspace_binary,
};

const TOKEN: &str = "bootstrap-token-for-the-usage-drill-0123456789";

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

struct Drill {
    stores: PrivateStores,
    redis_prefix: String,
    admin_addr: SocketAddr,
    ingest_addr: SocketAddr,
}

impl Drill {
    fn command(&self, binary: &str) -> Command {
        let mut command = service_command(workspace_binary(binary));
        command
            .env("KEYMETER_DATABASE_URL", &self.stores.database_url)
            .env("KEYMETER_AMQP_URL", &self.stores.amqp_url)
            .env(
                "KEYMETER_REDIS_NODES",
                test_support::redis_nodes().join(","),
            )
            .env("KEYMETER_REDIS_PREFIX", &self.redis_prefix)
            .env("KEYMETER_PEPPER", TEST_PEPPER);
        command
    }

    async fn key_admin(&self) -> ServiceProcess {
        let mut command = self.command("key-admin");
        command
            .arg("serve")
            .env("KEYMETER_ADMIN_LISTEN", self.admin_addr.to_string())
            .env("KEYMETER_BOOTSTRAP_ADMIN_TOKEN", TOKEN);
        ServiceProcess::start(command, self.admin_addr).await
    }

    async fn limiter(&self, name: &str) -> ServiceProcess {
        let listen = addr();
        let mut command = self.command("limiter");
        command
            .arg("serve")
            .env("KEYMETER_LIMITER_LISTEN", listen.to_string())
            .env("KEYMETER_INSTANCE", name)
            .env("KEYMETER_USAGE_FLUSH_MS", "200");
        ServiceProcess::start(command, listen).await
    }

    async fn ingest(&self) -> ServiceProcess {
        let mut command = service_command(env!("CARGO_BIN_EXE_usage-ingest"));
        command
            .arg("serve")
            .env("KEYMETER_DATABASE_URL", &self.stores.database_url)
            .env("KEYMETER_AMQP_URL", &self.stores.amqp_url)
            .env("KEYMETER_INGEST_LISTEN", self.ingest_addr.to_string())
            // Small transactions, so a SIGKILL finds several batches in flight.
            .env("KEYMETER_INGEST_MAX_BATCHES", "4");
        ServiceProcess::start(command, self.ingest_addr).await
    }
}

#[derive(Default)]
struct Tally {
    allowed: AtomicU64,
    denied: AtomicU64,
    other: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_is_counted_once_through_worker_kills_a_broker_restart_and_a_postgres_stop() {
    let admin_addr = addr();
    let ingest_addr = addr();
    let stores = PrivateStores::start([&admin_addr, &addr(), &ingest_addr]);
    let drill = Drill {
        stores,
        redis_prefix: format!("t{}", test_support::unique_name()),
        admin_addr,
        ingest_addr,
    };
    let mut migrate = drill.command("key-admin");
    migrate.arg("migrate");
    let (status, stderr) = run_to_exit(migrate);
    assert!(status.success(), "migrate: {stderr}");

    let admin = drill.key_admin().await;
    let limiters = [
        drill.limiter("drill-a").await,
        drill.limiter("drill-b").await,
    ];
    let mut ingest = Some(drill.ingest().await);
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();

    let (status, plan) = post(
        &client,
        &admin,
        "/v1/plans",
        json!({"name": "drill", "limits": [
            {"name": "per_second", "algorithm": "fixed_window", "limit": 40, "window_ms": 1000}
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{plan}");
    let (status, key) = post(&client, &admin, "/v1/keys", json!({"plan_id": plan["id"]})).await;
    assert_eq!(status, 201, "{key}");
    let raw = key["key"].as_str().unwrap().to_owned();
    let key_id = key["id"].as_str().unwrap().to_owned();
    // The key reaches Redis through the outbox; wait for its record, without a check
    // (every check is counted).
    let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
    let layout = KeyLayout::new(drill.redis_prefix.clone());
    let hash = Pepper::from_hex(TEST_PEPPER)
        .unwrap()
        .hash_key(&ApiKey::parse(&raw).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while projection::get_key(&redis, &layout, hash.as_str())
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = limiters.iter().map(|l| l.url("/v1/check")).collect();
    let mut senders = Vec::new();
    for lane in 0..4 {
        let (client, tally, stop, url) = (
            client.clone(),
            Arc::clone(&tally),
            Arc::clone(&stop),
            urls[lane % 2].clone(),
        );
        let raw = raw.clone();
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = client.post(&url).json(&json!({"key": raw})).send().await;
                let counter = match sent.map(|r| r.status().as_u16()) {
                    Ok(200) => &tally.allowed,
                    Ok(429) => &tally.denied,
                    _ => &tally.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }

    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(2_000).await;
    ingest.take().unwrap().kill();
    pause(1_000).await;
    ingest = Some(drill.ingest().await);
    pause(2_000).await;
    drill.stores.store("stop", "rabbitmq");
    pause(2_000).await;
    drill.stores.store("start", "rabbitmq");
    pause(3_000).await;
    ingest.take().unwrap().kill();
    pause(1_000).await;
    ingest = Some(drill.ingest().await);
    pause(2_000).await;
    drill.stores.store("stop", "postgres");
    pause(10_000).await;
    drill.stores.store("start", "postgres");
    pause(3_000).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    // SIGTERM flushes what each limiter still holds.
    for limiter in limiters {
        assert!(limiter.terminate().await.success());
    }
    let (allowed, denied, other) = (
        tally.allowed.load(Ordering::Relaxed),
        tally.denied.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    assert_eq!(other, 0, "every check was answered 200 or 429");
    assert!(
        allowed > 0 && denied > 0,
        "the drill saw both outcomes: {allowed} / {denied}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let want = (allowed as i64, denied as i64);
    let mut counted = (0, 0);
    while tokio::time::Instant::now() < deadline {
        counted = usage(&client, &admin, &key_id).await;
        if counted == want {
            break;
        }
        pause(500).await;
    }
    eprintln!("drill: {allowed} allowed and {denied} denied sent; counted {counted:?}");
    assert_eq!(counted, want, "every check counted exactly once");
    // Nothing arrives later either: no duplicate is waiting in a queue.
    pause(3_000).await;
    assert_eq!(usage(&client, &admin, &key_id).await, counted);
    drop(ingest);
    drop(admin);
    test_support::delete_prefix(&redis, &drill.redis_prefix).await;
}

async fn post(
    client: &reqwest::Client,
    admin: &ServiceProcess,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let response = client
        .post(admin.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The key's (allowed, denied) summed over every day bucket.
async fn usage(client: &reqwest::Client, admin: &ServiceProcess, key_id: &str) -> (i64, i64) {
    let response = client
        .get(admin.url(&format!("/v1/keys/{key_id}/usage?granularity=day")))
        .bearer_auth(TOKEN)
        .send()
        .await;
    let Ok(response) = response else {
        return (-1, -1);
    };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["buckets"]
        .as_array()
        .map(|buckets| {
            buckets.iter().fold((0, 0), |(a, d), b| {
                (
                    a + b["allowed"].as_i64().unwrap_or(0),
                    d + b["denied"].as_i64().unwrap_or(0),
                )
            })
        })
        .unwrap_or((-1, -1))
}
