use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use domain::{KeyRecord, Pepper, Scope};
use key_admin::relay::Relay;
use key_admin::state::AppState;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service_kit::health::Readiness;
use storage::rabbitmq::{RabbitLink, RabbitSettings};
use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{TEST_PEPPER, TestDb, TestRabbit};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub db: TestDb,
    pub rabbit: TestRabbit,
    pub redis: RedisCluster,
    pub layout: KeyLayout,
    pub pepper: Pepper,
    pub relay: Arc<Relay>,
    pub base: String,
    /// An `admin` token stored the way the bootstrap token is.
    pub admin_token: String,
    pub client: reqwest::Client,
    server: ServerHandle,
    relay_stop: CancellationToken,
    relay_task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// The app with its relay running, as `key-admin serve` runs it.
    pub async fn spawn() -> Self {
        let mut app = Self::spawn_without_relay().await;
        app.relay_task = Some(tokio::spawn(
            Arc::clone(&app.relay).run(app.relay_stop.clone()),
        ));
        app
    }

    /// The app with no relay: changes commit with their outbox rows and stop there, as
    /// when key-admin dies between the Postgres commit and the Redis write.
    pub async fn spawn_without_relay() -> Self {
        let db = TestDb::migrated().await;
        let rabbit = TestRabbit::declared().await;
        let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
        let layout = KeyLayout::new(format!("t{}", test_support::unique_name()));
        let pepper = Pepper::from_hex(TEST_PEPPER).unwrap();
        let pool = db.pool();
        let link = Arc::new(RabbitLink::new(
            RabbitSettings {
                url: test_support::amqp_url(),
            },
            "key-admin-test",
            rabbit.topology.clone(),
        ));
        let wakeup = Arc::new(Notify::new());
        let mut relay = Relay::new(
            pool.clone(),
            redis.clone(),
            layout.clone(),
            link,
            Arc::clone(&wakeup),
        );
        relay.poll_interval = Duration::from_millis(50);
        relay.epoch_check_interval = Duration::from_millis(200);
        let relay = Arc::new(relay);

        let admin_token = "test-admin-token-0123456789abcdefghijklmnop".to_owned();
        let mut conn = pool.get().await.unwrap();
        key_admin::bootstrap::store_admin_token(
            &mut conn,
            &pepper,
            &admin_token,
            "test admin",
            &[Scope::Admin],
            "bootstrap",
        )
        .await
        .unwrap();
        drop(conn);

        let state = AppState {
            pool,
            redis: redis.clone(),
            layout: layout.clone(),
            pepper: pepper.clone(),
            relay_wakeup: wakeup,
            relay: Arc::clone(&relay),
            usage_query_timeout: Duration::from_secs(2),
        };
        let (server, addr) = service_kit::server::bind(
            "key-admin",
            "127.0.0.1:0".parse().unwrap(),
            Readiness::new(),
            key_admin::serve::app(state).unwrap(),
        )
        .unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            db,
            rabbit,
            redis,
            layout,
            pepper,
            relay,
            base: format!("http://{addr}"),
            admin_token,
            client: reqwest::Client::new(),
            server: handle,
            relay_stop: CancellationToken::new(),
            relay_task: None,
        }
    }

    /// A relay of its own over the app's database, layout and broker, on `redis`, with the
    /// default settings; the app's own relay is not affected.
    pub fn another_relay(&self, redis: RedisCluster) -> Relay {
        let link = RabbitLink::new(
            RabbitSettings {
                url: test_support::amqp_url(),
            },
            "another-relay",
            self.rabbit.topology.clone(),
        );
        Relay::new(
            self.db.pool(),
            redis,
            self.layout.clone(),
            Arc::new(link),
            Arc::new(Notify::new()),
        )
    }

    /// Sends a request with `token` (or none) and returns the status and JSON body (or
    /// `Value::Null` for an empty or non-JSON body).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send(method, path, Some(&self.admin_token.clone()), body)
            .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.admin(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.admin(Method::DELETE, path, None).await
    }

    /// A new admin token with exactly these scopes.
    pub async fn token_with(&self, scopes: &[&str]) -> String {
        let (status, body) = self
            .post(
                "/v1/admin-tokens",
                json!({"name": "scoped", "scopes": scopes}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn create_plan(&self, name: &str, limits: Value) -> Value {
        let (status, body) = self
            .post("/v1/plans", json!({"name": name, "limits": limits}))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// A plan with one fixed-window limit of 100 per second.
    pub async fn default_plan(&self) -> Value {
        self.create_plan(
            &format!("plan-{}", test_support::unique_name()),
            json!([{"name": "per_second", "algorithm": "fixed_window", "limit": 100, "window_ms": 1000}]),
        )
        .await
    }

    pub async fn create_key(&self, body: Value) -> Value {
        let (status, created) = self.post("/v1/keys", body).await;
        assert_eq!(status, 201, "{created}");
        created
    }

    /// `count` keys on `plan`, each waited for until the relay has projected it; their raw
    /// keys.
    pub async fn create_projected_keys(&self, plan: &Value, count: usize) -> Vec<String> {
        let mut raws = Vec::with_capacity(count);
        for _ in 0..count {
            let key = self
                .create_key(serde_json::json!({"plan_id": plan["id"]}))
                .await;
            raws.push(key["key"].as_str().unwrap().to_owned());
        }
        for raw in &raws {
            self.eventually("projected", || async {
                self.record_of(raw).await.is_some()
            })
            .await;
        }
        raws
    }

    /// The projection record for a raw key, if Redis has one.
    pub async fn record_of(&self, raw_key: &str) -> Option<KeyRecord> {
        let key = domain::ApiKey::parse(raw_key).unwrap();
        let hash = self.pepper.hash_key(&key);
        projection::get_key(&self.redis, &self.layout, hash.as_str())
            .await
            .unwrap()
            .found()
            .map(|text| KeyRecord::decode(&text).unwrap())
    }

    /// The record groups of the projection whose epoch marker is missing.
    pub async fn groups_lost(&self) -> Vec<String> {
        projection::groups_without_marker(&self.redis, &self.layout)
            .await
            .unwrap()
    }

    /// Polls `check` until it holds or 5 s pass; returns how long it took.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if check().await {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what}: not within 5 s");
    }

    pub async fn stop(mut self) {
        self.relay_stop.cancel();
        if let Some(task) = self.relay_task.take() {
            let _ = task.await;
        }
        self.server.stop(true).await;
        test_support::delete_prefix(&self.redis, self.layout.prefix()).await;
        self.rabbit.cleanup().await;
    }
}
