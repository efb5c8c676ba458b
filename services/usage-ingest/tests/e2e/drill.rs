//! The whole system from the real binaries, for the end-to-end usage tests: key-admin,
//! limiters and usage-ingest on one Postgres, the Redis Cluster and one RabbitMQ, with a
//! Redis prefix (and optionally RabbitMQ names) of the test's own, and client lanes that
//! send checks and tally the answers.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use domain::{ApiKey, Pepper};
use serde_json::{Value, json};
use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{
    ServiceProcess, TEST_PEPPER, free_addr, run_to_exit, service_command, workspace_binary,
};

pub const TOKEN: &str = "bootstrap-token-for-the-usage-drill-0123456789";

pub struct Drill {
    pub database_url: String,
    pub amqp_url: String,
    /// `KEYMETER_AMQP_PREFIX`, when the broker is shared with other tests.
    pub amqp_prefix: Option<String>,
    pub redis_prefix: String,
    pub admin_addr: SocketAddr,
    pub ingest_addr: SocketAddr,
}

impl Drill {
    fn command(&self, binary: &str) -> Command {
        let mut command = service_command(workspace_binary(binary));
        command
            .env("KEYMETER_DATABASE_URL", &self.database_url)
            .env("KEYMETER_AMQP_URL", &self.amqp_url)
            .env(
                "KEYMETER_REDIS_NODES",
                test_support::redis_nodes().join(","),
            )
            .env("KEYMETER_REDIS_PREFIX", &self.redis_prefix)
            .env("KEYMETER_PEPPER", TEST_PEPPER);
        if let Some(prefix) = &self.amqp_prefix {
            command.env("KEYMETER_AMQP_PREFIX", prefix);
        }
        command
    }

    pub fn migrate(&self) {
        let mut migrate = self.command("key-admin");
        migrate.arg("migrate");
        let (status, stderr) = run_to_exit(migrate);
        assert!(status.success(), "migrate: {stderr}");
    }

    pub async fn key_admin(&self) -> ServiceProcess {
        let mut command = self.command("key-admin");
        command
            .arg("serve")
            .env("KEYMETER_ADMIN_LISTEN", self.admin_addr.to_string())
            .env("KEYMETER_BOOTSTRAP_ADMIN_TOKEN", TOKEN);
        ServiceProcess::start(command, self.admin_addr).await
    }

    pub async fn limiter(&self, name: &str) -> ServiceProcess {
        let listen = free_addr();
        let mut command = self.command("limiter");
        command
            .arg("serve")
            .env("KEYMETER_LIMITER_LISTEN", listen.to_string())
            .env("KEYMETER_INSTANCE", name)
            .env("KEYMETER_USAGE_FLUSH_MS", "200");
        ServiceProcess::start(command, listen).await
    }

    pub async fn ingest(&self) -> ServiceProcess {
        let mut command = self.command("usage-ingest");
        command
            .arg("serve")
            .env("KEYMETER_INGEST_LISTEN", self.ingest_addr.to_string())
            // Small transactions, so a stop finds several batches in flight.
            .env("KEYMETER_INGEST_MAX_BATCHES", "4");
        ServiceProcess::start(command, self.ingest_addr).await
    }

    /// A plan of 40 checks per second and a key on it, once the key is in Redis (waited for
    /// without a check: every check is counted). Returns the raw key and its id.
    pub async fn key(&self, client: &reqwest::Client, admin: &ServiceProcess) -> (String, String) {
        let (status, plan) = post(
            client,
            admin,
            "/v1/plans",
            json!({"name": "drill", "limits": [
                {"name": "per_second", "algorithm": "fixed_window", "limit": 40, "window_ms": 1000}
            ]}),
        )
        .await;
        assert_eq!(status, 201, "{plan}");
        let (status, key) = post(client, admin, "/v1/keys", json!({"plan_id": plan["id"]})).await;
        assert_eq!(status, 201, "{key}");
        let raw = key["key"].as_str().unwrap().to_owned();
        let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
        let layout = KeyLayout::new(self.redis_prefix.clone());
        let hash = Pepper::from_hex(TEST_PEPPER)
            .unwrap()
            .hash_key(&ApiKey::parse(&raw).unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while projection::get_key(&redis, &layout, hash.as_str())
            .await
            .unwrap()
            .found()
            .is_none()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the key never reached Redis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (raw, key["id"].as_str().unwrap().to_owned())
    }

    /// Polls the key's usage until it is `want` (up to 90 s); returns the last answer.
    pub async fn counted(
        &self,
        client: &reqwest::Client,
        admin: &ServiceProcess,
        key_id: &str,
        want: (i64, i64),
    ) -> (i64, i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut counted = (0, 0);
        while tokio::time::Instant::now() < deadline {
            counted = usage(client, admin, key_id).await;
            if counted == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        counted
    }

    pub async fn cleanup(&self) {
        let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
        test_support::delete_prefix(&redis, &self.redis_prefix).await;
    }
}

/// Checks sent by client lanes, tallied by answer: 200 allowed, 429 denied. A request that
/// got no answer (a limiter that stopped listening) reached no limiter's counts.
#[derive(Default)]
pub struct Tally {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub unanswered: AtomicU64,
    pub other: AtomicU64,
}

pub struct Traffic {
    pub tally: Arc<Tally>,
    /// The limiter the lanes send to; change it to move the load.
    pub target: Arc<RwLock<String>>,
    stop: Arc<AtomicBool>,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `lanes` concurrent senders of `{"key": raw}` to `target`'s `/v1/check`.
    pub fn start(client: &reqwest::Client, raw: &str, target: &str, lanes: usize) -> Self {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let target = Arc::new(RwLock::new(target.to_owned()));
        let lanes = (0..lanes)
            .map(|_| {
                let (client, tally, stop, target) = (
                    client.clone(),
                    Arc::clone(&tally),
                    Arc::clone(&stop),
                    Arc::clone(&target),
                );
                let body = json!({"key": raw});
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let url = target.read().unwrap().clone();
                        let sent = client.post(&url).json(&body).send().await;
                        let counter = match sent.map(|r| r.status().as_u16()) {
                            Ok(200) => &tally.allowed,
                            Ok(429) => &tally.denied,
                            Ok(_) => &tally.other,
                            Err(_) => &tally.unanswered,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                })
            })
            .collect();
        Self {
            tally,
            target,
            stop,
            lanes,
        }
    }

    pub fn send_to(&self, limiter: &ServiceProcess) {
        *self.target.write().unwrap() = limiter.url("/v1/check");
    }

    /// Stops the lanes; returns (allowed, denied, unanswered, other).
    pub async fn stop(self) -> (u64, u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for lane in self.lanes {
            lane.await.unwrap();
        }
        let t = &self.tally;
        (
            t.allowed.load(Ordering::Relaxed),
            t.denied.load(Ordering::Relaxed),
            t.unanswered.load(Ordering::Relaxed),
            t.other.load(Ordering::Relaxed),
        )
    }
}

pub async fn post(
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

/// The key's (allowed, denied) summed over every day bucket; (-1, -1) when unreadable.
pub async fn usage(client: &reqwest::Client, admin: &ServiceProcess, key_id: &str) -> (i64, i64) {
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
