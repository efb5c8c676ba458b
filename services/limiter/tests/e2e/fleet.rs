//! key-admin and two limiter instances, all real binaries on real stores, driven over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{
    ServiceProcess, TEST_PEPPER, TestDb, TestRabbit, service_command, workspace_binary,
};

const TOKEN: &str = "fleet-test-admin-token-0123456789abcdefgh";

pub(crate) struct Fleet {
    pub(crate) db: TestDb,
    rabbit: TestRabbit,
    pub(crate) prefix: String,
    redis_nodes: Vec<String>,
    pub(crate) admin: ServiceProcess,
    pub(crate) limiters: Vec<ServiceProcess>,
    pub(crate) client: reqwest::Client,
}

impl Fleet {
    async fn start(limiters: usize, cache_ttl_ms: u64) -> Self {
        Self::start_on(test_support::redis_nodes(), limiters, cache_ttl_ms).await
    }

    /// The same on the Redis Cluster whose nodes are `redis_nodes`.
    pub(crate) async fn start_on(
        redis_nodes: Vec<String>,
        limiters: usize,
        cache_ttl_ms: u64,
    ) -> Self {
        let db = TestDb::migrated().await;
        let rabbit = TestRabbit::declared().await;
        let prefix = format!("f{}", test_support::unique_name());
        let nodes = redis_nodes.join(",");
        let admin_addr = test_support::free_addr();
        let mut command = service_command(workspace_binary("key-admin"));
        command
            .arg("serve")
            .env("KEYMETER_ADMIN_LISTEN", admin_addr.to_string())
            .env("KEYMETER_DATABASE_URL", &db.url)
            .env("KEYMETER_REDIS_NODES", &nodes)
            .env("KEYMETER_REDIS_PREFIX", &prefix)
            .env("KEYMETER_AMQP_URL", test_support::amqp_url())
            .env("KEYMETER_AMQP_PREFIX", rabbit.topology_prefix())
            .env("KEYMETER_PEPPER", TEST_PEPPER)
            .env("KEYMETER_BOOTSTRAP_ADMIN_TOKEN", TOKEN);
        let admin = ServiceProcess::start(command, admin_addr).await;
        let mut started = Vec::new();
        for _ in 0..limiters {
            let limiter_addr = test_support::free_addr();
            let mut command = service_command(crate::BINARY);
            command
                .arg("serve")
                .env("KEYMETER_LIMITER_LISTEN", limiter_addr.to_string())
                .env("KEYMETER_REDIS_NODES", &nodes)
                .env("KEYMETER_REDIS_PREFIX", &prefix)
                .env("KEYMETER_AMQP_URL", test_support::amqp_url())
                .env("KEYMETER_AMQP_PREFIX", rabbit.topology_prefix())
                .env("KEYMETER_PEPPER", TEST_PEPPER)
                .env("KEYMETER_CACHE_TTL_MS", cache_ttl_ms.to_string());
            started.push(ServiceProcess::start(command, limiter_addr).await);
        }
        let fleet = Self {
            db,
            rabbit,
            prefix,
            redis_nodes,
            admin,
            limiters: started,
            // Below actix's 5 s keep-alive: a connection idle while the test waits for a
            // window edge must not be reused just as the server closes it.
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        };
        // The bootstrap token is stored in the background; the limiters bind their event
        // queues right after start. Wait for both.
        for _ in 0..200 {
            let ready = fleet
                .client
                .get(fleet.admin.url("/v1/plans"))
                .bearer_auth(TOKEN)
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        fleet
    }

    pub(crate) async fn admin_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(self.admin.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// A key on a new plan with these limits.
    pub(crate) async fn key_with(&self, limits: Value) -> String {
        let plan = self
            .admin_post(
                "/v1/plans",
                json!({"name": test_support::unique_name(), "limits": limits}),
            )
            .await;
        let key = self
            .admin_post("/v1/keys", json!({"plan_id": plan["id"]}))
            .await;
        let raw = key["key"].as_str().unwrap().to_owned();
        // Wait until every limiter can see it (a peek: cost 0 spends nothing).
        for limiter in &self.limiters {
            for _ in 0..200 {
                if self.check(limiter, &raw, 0).await.0 == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        raw
    }

    pub(crate) async fn check(
        &self,
        limiter: &ServiceProcess,
        key: &str,
        cost: u64,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(limiter.url("/v1/check"))
            .json(&json!({"key": key, "cost": cost}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn stop(self) {
        let redis = storage::redis_cluster::RedisCluster::new(
            storage::redis_cluster::RedisSettings::new(self.redis_nodes.clone()),
        )
        .unwrap();
        test_support::delete_prefix(&redis, &self.prefix).await;
        self.rabbit.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_by_every_instance_within_a_second() {
    // A one-minute cache: only the key event can explain a refusal within a second.
    let fleet = Fleet::start(2, 60_000).await;
    let key = fleet
        .key_with(
            json!([{"name": "m", "algorithm": "fixed_window", "limit": 1000, "window_ms": 60000}]),
        )
        .await;
    for limiter in &fleet.limiters {
        assert_eq!(
            fleet.check(limiter, &key, 1).await.0,
            200,
            "cached as active"
        );
    }
    let key_id = fleet
        .client
        .post(fleet.limiters[0].url("/v1/check"))
        .json(&json!({"key": key, "cost": 0}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let revoked_at = Instant::now();
    fleet
        .admin_post(&format!("/v1/keys/{key_id}/revoke"), json!({}))
        .await;
    let mut took = Vec::new();
    for limiter in &fleet.limiters {
        loop {
            let (status, body) = fleet.check(limiter, &key, 1).await;
            if status == 401 {
                assert_eq!(body["code"], "REVOKED");
                took.push(revoked_at.elapsed());
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "still allowed after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("REVOKED on every instance after {took:?}");
    assert!(took.iter().all(|t| *t < Duration::from_secs(1)), "{took:?}");
    fleet.stop().await;
}

/// Waits until the current 10 s window has at least `margin` left, so a burst stays in one
/// fixed window.
async fn away_from_a_window_edge(margin: Duration) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        if 10_000 - now % 10_000 >= margin.as_millis() as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_admit_exactly_the_limit_under_1000_concurrent_requests() {
    let fleet = Fleet::start(2, 1000).await;
    let urls: Arc<Vec<String>> =
        Arc::new(fleet.limiters.iter().map(|l| l.url("/v1/check")).collect());
    for algorithm in [
        "sliding_log",
        "fixed_window",
        "sliding_window",
        "token_bucket",
    ] {
        let key = fleet
            .key_with(
                json!([{"name": "l", "algorithm": algorithm, "limit": 100, "window_ms": 10000}]),
            )
            .await;
        away_from_a_window_edge(Duration::from_secs(5)).await;
        let started = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let (client, urls) = (fleet.client.clone(), Arc::clone(&urls));
                let key = key.clone();
                let gate = Arc::clone(&gate);
                tokio::spawn(async move {
                    let _permit = gate.acquire().await.unwrap();
                    client
                        .post(&urls[i % 2])
                        .json(&json!({"key": key, "cost": 1}))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        let mut allowed = 0;
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                200 => allowed += 1,
                429 => refused += 1,
                other => panic!("{algorithm}: unexpected status {other}"),
            }
        }
        let elapsed = started.elapsed();
        eprintln!("{algorithm}: {allowed} allowed, {refused} refused in {elapsed:?}");
        assert_eq!(allowed + refused, 1000);
        if algorithm == "token_bucket" {
            // GCRA refills one unit every 100 ms: exactly 100 while the burst lasts under
            // 100 ms, plus one per 100 ms beyond.
            let refilled = (elapsed.as_millis() / 100) as usize;
            assert!(
                (100..=100 + refilled).contains(&allowed),
                "{allowed} after {elapsed:?}"
            );
        } else {
            assert_eq!(allowed, 100, "{algorithm}");
        }
    }
    fleet.stop().await;
}
