//! The check routes in process, over real HTTP, against the real Redis Cluster. Key records
//! are written the way key-admin's relay writes them (crates/storage projection).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod batching;

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use chrono::{DateTime, Utc};
use domain::events::V1;
use domain::{Algorithm, ApiKey, CreditsConfig, KeyPrefix, KeyRecord, Limit, Pepper};
use limiter::check::Checker;
use limiter::key_cache::KeyCache;
use limiter::settings::{DenyStatus, FailurePolicy};
use serde_json::{Value, json};
use service_kit::health::Readiness;
use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisSettings};
use uuid::Uuid;

struct TestLimiter {
    checker: Arc<Checker>,
    base: String,
    redis: RedisCluster,
    layout: KeyLayout,
    pepper: Pepper,
    client: reqwest::Client,
    server: ServerHandle,
}

#[derive(Default)]
struct KeySpec {
    limits: Vec<Limit>,
    credits: Option<u64>,
    disabled: bool,
    revoked: bool,
    expires_at: Option<DateTime<Utc>>,
}

impl TestLimiter {
    async fn start(nodes: Vec<String>, policy: FailurePolicy, deny: DenyStatus) -> Self {
        let redis = RedisCluster::new(RedisSettings {
            response_timeout: Duration::from_millis(300),
            ..RedisSettings::new(nodes)
        })
        .unwrap();
        let layout = KeyLayout::new(format!("t{}", test_support::unique_name()));
        let pepper = Pepper::from_hex(test_support::TEST_PEPPER).unwrap();
        let breaker = Arc::new(limiter::breaker::Breaker::new(3, Duration::from_secs(60)));
        let checker = Arc::new(Checker {
            redis: redis.clone(),
            layout: layout.clone(),
            pepper: pepper.clone(),
            keys: Arc::new(KeyCache::new(
                1000,
                Duration::from_millis(200),
                Duration::from_millis(100),
            )),
            batcher: Arc::new(limiter::batching::CheckBatcher::new(
                redis.clone(),
                layout.clone(),
                Arc::clone(&breaker),
                1,
                64,
            )),
            failure_policy: policy,
            usage: Arc::new(limiter::usage::UsageAggregator::default()),
            breaker,
        });
        // As key-admin keeps it (when the cluster is there at all).
        let _ = projection::set_epoch(&redis, &layout, "test").await;
        let (server, addr) = service_kit::server::bind(
            "limiter",
            "127.0.0.1:0".parse().unwrap(),
            Readiness::new(),
            limiter::routes::configure(Arc::clone(&checker), deny),
        )
        .unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            checker,
            base: format!("http://{addr}"),
            redis,
            layout,
            pepper,
            client: reqwest::Client::new(),
            server: handle,
        }
    }

    async fn new() -> Self {
        Self::start(
            test_support::redis_nodes(),
            FailurePolicy::Closed,
            DenyStatus::Native,
        )
        .await
    }

    /// A key written into the projection; returns the raw key and its id.
    async fn add_key(&self, spec: KeySpec) -> (String, Uuid) {
        let key = ApiKey::generate(&KeyPrefix::default());
        let record = KeyRecord {
            v: V1,
            key_id: Uuid::now_v7(),
            plan_id: Uuid::now_v7(),
            owner_id: Some("acme".into()),
            enabled: !spec.disabled,
            revoked: spec.revoked,
            expires_at: spec.expires_at,
            limits: spec.limits,
            credits: spec.credits.map(|_| CreditsConfig { refill: None }),
            metadata: json!({"tier": "gold"}),
        };
        let hash = self.pepper.hash_key(&key);
        projection::put_key(&self.redis, &self.layout, &record, hash.as_str(), None)
            .await
            .unwrap();
        if let Some(remaining) = spec.credits {
            projection::reset_credits(&self.redis, &self.layout, record.key_id, remaining)
                .await
                .unwrap();
        }
        (key.expose().to_owned(), record.key_id)
    }

    async fn check(&self, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .client
            .post(format!("{}/v1/check", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn stop(self) {
        self.server.stop(true).await;
        test_support::delete_prefix(&self.redis, self.layout.prefix()).await;
    }
}

fn per_minute(limit: u64) -> Limit {
    Limit {
        name: "per_minute".into(),
        algorithm: Algorithm::FixedWindow,
        limit,
        window_ms: 60_000,
        burst: None,
    }
}

#[tokio::test]
async fn an_allowed_check_answers_the_key_its_limits_and_the_headers() {
    let limiter = TestLimiter::new().await;
    let (key, key_id) = limiter
        .add_key(KeySpec {
            limits: vec![per_minute(10)],
            credits: Some(100),
            ..KeySpec::default()
        })
        .await;
    let (status, headers, body) = limiter.check(json!({"key": key, "cost": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], true);
    assert_eq!(body["code"], "OK");
    assert_eq!(body["key_id"], key_id.to_string());
    assert_eq!(body["owner_id"], "acme");
    assert_eq!(body["metadata"], json!({"tier": "gold"}));
    assert_eq!(body["limits"][0]["name"], "per_minute");
    assert_eq!(body["limits"][0]["limit"], 10);
    assert_eq!(body["limits"][0]["remaining"], 8);
    assert_eq!(body["credits_remaining"], 98);
    assert_eq!(headers["ratelimit-policy"], "\"per_minute\";q=10;w=60");
    assert!(
        headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per_minute\";r=8;t=")
    );
    assert_eq!(headers["x-ratelimit-limit"], "10");
    assert_eq!(headers["x-ratelimit-remaining"], "8");
    limiter.stop().await;
}

#[tokio::test]
async fn the_key_may_come_in_a_header() {
    let limiter = TestLimiter::new().await;
    let (key, _) = limiter
        .add_key(KeySpec {
            limits: vec![per_minute(10)],
            ..KeySpec::default()
        })
        .await;
    for (name, value) in [
        ("authorization", format!("Bearer {key}")),
        ("x-api-key", key.clone()),
    ] {
        let response = limiter
            .client
            .post(format!("{}/v1/check", limiter.base))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
    limiter.stop().await;
}

#[tokio::test]
async fn limits_and_credits_refuse_with_429_and_a_retry_time() {
    let limiter = TestLimiter::new().await;
    let (key, _) = limiter
        .add_key(KeySpec {
            limits: vec![per_minute(2)],
            ..KeySpec::default()
        })
        .await;
    limiter.check(json!({"key": key})).await;
    limiter.check(json!({"key": key})).await;
    let (status, headers, body) = limiter.check(json!({"key": key})).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["allowed"], false);
    let retry_ms = body["retry_after_ms"].as_u64().unwrap();
    assert!(retry_ms > 0 && retry_ms <= 60_000);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after, retry_ms.div_ceil(1000).max(1));

    let (poor, poor_id) = limiter
        .add_key(KeySpec {
            credits: Some(3),
            ..KeySpec::default()
        })
        .await;
    assert_eq!(limiter.check(json!({"key": poor, "cost": 2})).await.0, 200);
    let (status, _, body) = limiter.check(json!({"key": poor, "cost": 2})).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "CREDITS_EXHAUSTED");
    assert_eq!(
        body["credits_remaining"], 1,
        "a refused check spends nothing"
    );
    // The spend is kept per minute for the credits reconciliation: 2, in one minute.
    let spent = projection::credits_spent(&limiter.redis, &limiter.layout, poor_id)
        .await
        .unwrap();
    assert_eq!(spent.iter().map(|(_, s)| *s).collect::<Vec<_>>(), vec![2]);
    limiter.stop().await;
}

#[tokio::test]
async fn key_problems_are_401_with_their_code() {
    let limiter = TestLimiter::new().await;
    let (revoked, _) = limiter
        .add_key(KeySpec {
            revoked: true,
            ..KeySpec::default()
        })
        .await;
    let (disabled, _) = limiter
        .add_key(KeySpec {
            disabled: true,
            ..KeySpec::default()
        })
        .await;
    let (expired, _) = limiter
        .add_key(KeySpec {
            expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
            ..KeySpec::default()
        })
        .await;
    let unknown = ApiKey::generate(&KeyPrefix::default()).expose().to_owned();
    for (body, code) in [
        (json!({}), "MISSING_KEY"),
        (json!({"key": ""}), "MISSING_KEY"),
        (json!({"key": "km_not-a-key"}), "MALFORMED_KEY"),
        (json!({"key": unknown}), "UNKNOWN_KEY"),
        (json!({"key": revoked}), "REVOKED"),
        (json!({"key": disabled}), "DISABLED"),
        (json!({"key": expired}), "EXPIRED"),
    ] {
        let (status, _, answer) = limiter.check(body).await;
        assert_eq!((status, answer["code"].as_str().unwrap()), (401, code));
        assert_eq!(answer["allowed"], false);
    }
    limiter.stop().await;
}

#[tokio::test]
async fn bad_requests_are_400_not_a_check() {
    let limiter = TestLimiter::new().await;
    for body in [
        json!({"key": "x", "extra": 1}),
        json!({"cost": -1}),
        json!({"cost": 1e13}),
        json!([1]),
    ] {
        let (status, _, answer) = limiter.check(body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["code"], "BAD_REQUEST");
    }
    let response = limiter
        .client
        .post(format!("{}/v1/check", limiter.base))
        .body(format!("{{\"key\": \"{}\"}}", "x".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "a huge body is refused");
    limiter.stop().await;
}

#[tokio::test]
async fn a_malformed_key_needs_no_redis_and_an_outage_is_never_401() {
    // Nothing listens on port 1: every Redis call fails.
    let down = vec!["redis://127.0.0.1:1".to_owned()];
    let closed = TestLimiter::start(down.clone(), FailurePolicy::Closed, DenyStatus::Native).await;
    let (status, _, body) = closed
        .check(json!({"key": "km_0000000000000000000000000000000"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (401, "MALFORMED_KEY"),
        "answered without Redis"
    );
    let well_formed = ApiKey::generate(&KeyPrefix::default()).expose().to_owned();
    let (status, _, body) = closed.check(json!({"key": well_formed})).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (503, "UNAVAILABLE")
    );
    closed.server.stop(true).await;

    let open = TestLimiter::start(down, FailurePolicy::Open, DenyStatus::Native).await;
    let (status, headers, body) = open.check(json!({"key": well_formed})).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (200, "OK"));
    assert_eq!(headers["x-keymeter-degraded"], "redis-unavailable");
    // Three failures in a row open the breaker: from then on Redis is not even tried.
    for _ in 0..3 {
        open.check(json!({"key": well_formed})).await;
    }
    assert_eq!(open.checker.breaker.state(), limiter::breaker::State::Open);
    let (status, headers, _) = open.check(json!({"key": well_formed})).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-keymeter-degraded"], "redis-unavailable");
    open.server.stop(true).await;

    // For nginx, refusals become 403; an outage does not pass for one.
    let forbidding = TestLimiter::start(
        vec!["redis://127.0.0.1:1".to_owned()],
        FailurePolicy::Closed,
        DenyStatus::Forbidden,
    )
    .await;
    let authorize = |key: &str| {
        forbidding
            .client
            .get(format!("{}/v1/authorize", forbidding.base))
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(authorize("km_bad").await.unwrap().status(), 403);
    assert_eq!(authorize(&well_formed).await.unwrap().status(), 503);
    forbidding.server.stop(true).await;
}

#[tokio::test]
async fn a_key_missing_while_redis_lost_the_projection_is_503_whatever_the_policy() {
    for policy in [FailurePolicy::Closed, FailurePolicy::Open] {
        let limiter =
            TestLimiter::start(test_support::redis_nodes(), policy, DenyStatus::Native).await;
        let (key, _) = limiter
            .add_key(KeySpec {
                limits: vec![per_minute(100)],
                ..KeySpec::default()
            })
            .await;
        let unknown = ApiKey::generate(&KeyPrefix::default()).expose().to_owned();
        assert_eq!(limiter.check(json!({"key": key})).await.0, 200);
        assert_eq!(limiter.check(json!({"key": unknown})).await.0, 401);

        // Redis loses everything of this projection, its epoch markers with it.
        test_support::delete_prefix(&limiter.redis, limiter.layout.prefix()).await;
        // Past the key cache's TTLs (200 ms for a key, 100 ms for an unknown one).
        tokio::time::sleep(Duration::from_millis(300)).await;
        for raw in [&key, &unknown] {
            let (status, headers, body) = limiter.check(json!({"key": raw})).await;
            assert_eq!(
                (status, body["code"].as_str().unwrap()),
                (503, "UNAVAILABLE"),
                "{policy:?}: neither 401 (the key may be valid) nor allowed (it may be made up)"
            );
            assert!(!headers.contains_key("x-keymeter-degraded"));
        }
        assert_eq!(
            limiter.checker.breaker.state(),
            limiter::breaker::State::Closed,
            "Redis answered all along"
        );

        // key-admin writes the markers once it has rebuilt everything; a key Redis does not
        // hold is then unknown again.
        projection::set_epoch(&limiter.redis, &limiter.layout, "rebuilt")
            .await
            .unwrap();
        assert_eq!(limiter.check(json!({"key": unknown})).await.0, 401);
        limiter.stop().await;
    }
}

#[tokio::test]
async fn keys_of_a_shard_that_lost_its_data_are_503_and_the_rest_are_served() {
    let limiter = TestLimiter::start(
        test_support::redis_nodes(),
        FailurePolicy::Open,
        DenyStatus::Native,
    )
    .await;
    let masters = test_support::cluster_masters(&limiter.redis).await;
    assert!(masters.len() > 1, "a cluster of several shards");
    let shard_of = |raw: &str| {
        let hash = limiter.pepper.hash_key(&ApiKey::parse(raw).unwrap());
        let record = limiter.layout.record(hash.as_str());
        let redis = limiter.redis.clone();
        async move { test_support::master_of(&redis, &record).await }
    };
    let mut keys = Vec::new();
    for _ in 0..12 {
        let (raw, _) = limiter
            .add_key(KeySpec {
                limits: vec![per_minute(100)],
                ..KeySpec::default()
            })
            .await;
        let shard = shard_of(&raw).await;
        keys.push((raw, shard));
    }
    let lost_shard = keys[0].1.clone();
    assert!(
        keys.iter().any(|(_, shard)| *shard != lost_shard),
        "twelve keys on one shard of {}",
        masters.len()
    );
    // Made-up keys, one whose record would be on the shard that loses its data, one not.
    let mut unknown_on_lost = None;
    let mut unknown_elsewhere = None;
    while unknown_on_lost.is_none() || unknown_elsewhere.is_none() {
        let raw = ApiKey::generate(&KeyPrefix::default()).expose().to_owned();
        if shard_of(&raw).await == lost_shard {
            unknown_on_lost.get_or_insert(raw);
        } else {
            unknown_elsewhere.get_or_insert(raw);
        }
    }
    let (unknown_on_lost, unknown_elsewhere) =
        (unknown_on_lost.unwrap(), unknown_elsewhere.unwrap());
    for (raw, _) in &keys {
        assert_eq!(limiter.check(json!({"key": raw})).await.0, 200);
    }
    assert_eq!(limiter.check(json!({"key": unknown_on_lost})).await.0, 401);

    // That shard (master and replica) restarts empty: what it held of this projection is
    // gone, records and epoch markers alike; the other shards keep theirs.
    test_support::delete_prefix_on(&lost_shard, limiter.layout.prefix()).await;
    // Past the key cache's TTLs (200 ms for a key, 100 ms for an unknown one).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (raw, shard) in &keys {
        let (status, _, body) = limiter.check(json!({"key": raw})).await;
        if *shard == lost_shard {
            assert_eq!(
                (status, body["code"].as_str().unwrap()),
                (503, "UNAVAILABLE"),
                "a valid key on the lost shard is neither 401 nor allowed unseen"
            );
        } else {
            assert_eq!(status, 200, "a key on a shard that kept its data: {body}");
        }
    }
    assert_eq!(limiter.check(json!({"key": unknown_on_lost})).await.0, 503);
    assert_eq!(
        limiter.check(json!({"key": unknown_elsewhere})).await.0,
        401,
        "a made-up key on a shard that kept its markers is still unknown"
    );
    limiter.stop().await;
}

#[tokio::test]
async fn a_record_that_cannot_be_read_is_503_whatever_the_policy() {
    for policy in [FailurePolicy::Closed, FailurePolicy::Open] {
        let limiter =
            TestLimiter::start(test_support::redis_nodes(), policy, DenyStatus::Native).await;
        let key = ApiKey::generate(&KeyPrefix::default());
        let record = limiter
            .layout
            .record(limiter.pepper.hash_key(&key).as_str());
        // A record of a format this limiter does not know (a newer key-admin's, say).
        let mut conn = limiter.redis.connection().await.unwrap();
        let _: () = deadpool_redis::redis::cmd("SET")
            .arg(&record)
            .arg(r#"{"v":99}"#)
            .query_async(&mut conn)
            .await
            .unwrap();
        let (status, _, body) = limiter.check(json!({"key": key.expose()})).await;
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (503, "UNAVAILABLE"),
            "{policy:?}: it may be revoked, so neither allowed nor 401"
        );
        limiter.stop().await;
    }
}

#[tokio::test]
async fn a_key_whose_credit_balance_is_lost_is_answered_by_the_failure_policy() {
    for (policy, expected) in [(FailurePolicy::Closed, 503), (FailurePolicy::Open, 200)] {
        let limiter =
            TestLimiter::start(test_support::redis_nodes(), policy, DenyStatus::Native).await;
        let (key, key_id) = limiter
            .add_key(KeySpec {
                limits: vec![per_minute(100)],
                credits: Some(10),
                ..KeySpec::default()
            })
            .await;
        assert_eq!(limiter.check(json!({"key": key})).await.0, 200);

        // The shard holding the balance lost it; the record (cached, or on another shard)
        // still says the key has credits.
        projection::remove_credits(&limiter.redis, &limiter.layout, key_id)
            .await
            .unwrap();
        let (status, headers, body) = limiter.check(json!({"key": key})).await;
        assert_eq!(
            status, expected,
            "{policy:?}: the failure policy, not CREDITS_EXHAUSTED: {body}"
        );
        assert_eq!(
            headers.contains_key("x-keymeter-degraded"),
            expected == 200,
            "{policy:?}"
        );
        assert_eq!(
            limiter.checker.breaker.state(),
            limiter::breaker::State::Closed,
            "Redis answered"
        );

        // key-admin writes the balance again (its rebuild keeps none it did not find).
        projection::init_credits_if_absent(&limiter.redis, &limiter.layout, key_id, 5)
            .await
            .unwrap();
        let (status, headers, _) = limiter.check(json!({"key": key})).await;
        assert_eq!(status, 200);
        assert!(!headers.contains_key("x-keymeter-degraded"));
        assert_eq!(
            projection::credits_remaining(&limiter.redis, &limiter.layout, key_id)
                .await
                .unwrap(),
            Some(4),
            "spent from the balance written again, nothing from the lost one"
        );
        limiter.stop().await;
    }
}

#[tokio::test]
async fn authorize_passes_the_key_to_the_upstream_and_refuses_as_configured() {
    let limiter = TestLimiter::new().await;
    let (key, key_id) = limiter
        .add_key(KeySpec {
            limits: vec![per_minute(1)],
            ..KeySpec::default()
        })
        .await;
    let authorize = |base: &str, key: &str| {
        limiter
            .client
            .get(format!("{base}/v1/authorize"))
            .header("x-api-key", key)
            .header("x-keymeter-cost", "1")
            .send()
    };
    let allowed = authorize(&limiter.base, &key).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-keymeter-key-id"], key_id.to_string());
    assert_eq!(allowed.headers()["x-keymeter-owner-id"], "acme");
    assert!(allowed.text().await.unwrap().is_empty());
    let refused = limiter
        .client
        .post(format!("{}/v1/authorize/any/client/path", limiter.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        429,
        "any method, any path below /v1/authorize"
    );
    assert!(refused.headers().contains_key("retry-after"));
    limiter.stop().await;

    let forbidding = TestLimiter::start(
        test_support::redis_nodes(),
        FailurePolicy::Closed,
        DenyStatus::Forbidden,
    )
    .await;
    let response = forbidding
        .client
        .get(format!("{}/v1/authorize", forbidding.base))
        .header("x-api-key", "km_bad")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    forbidding.stop().await;
}
