//! One Redis shard, master and replica, SIGKILLed and started again empty, on a cluster of
//! this test's own, under checks of keys spread over every shard: no valid key is ever
//! answered 401; until key-admin has rebuilt the lost record groups the keys that shard
//! held are 503 and the others are served; then every key is served again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::{ApiKey, Pepper};
use serde_json::json;
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{Private, PrivateStores, TEST_PEPPER};

use crate::fleet::Fleet;

#[derive(Debug, Clone)]
struct Answer {
    /// Index into the test's keys.
    key: usize,
    status: u16,
    code: String,
    degraded: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_restarts_empty_is_rebuilt_and_its_keys_are_never_401() {
    let stores = PrivateStores::start_some(
        [
            &test_support::free_addr(),
            &test_support::free_addr(),
            &test_support::free_addr(),
        ],
        Private {
            postgres: false,
            rabbitmq: false,
            redis: true,
        },
    );
    // A short key cache, so records are read from Redis again while the shard is away.
    let fleet = Fleet::start_on(stores.redis_nodes.clone(), 1, 200).await;
    let redis = RedisCluster::new(RedisSettings::new(stores.redis_nodes.clone())).unwrap();
    let layout = KeyLayout::new(fleet.prefix.clone());
    let pepper = Pepper::from_hex(TEST_PEPPER).unwrap();
    let limits =
        json!([{"name": "m", "algorithm": "fixed_window", "limit": 1_000_000, "window_ms": 60000}]);
    let mut keys = Vec::new();
    for _ in 0..12 {
        let raw = fleet.key_with(limits.clone()).await;
        let hash = pepper.hash_key(&ApiKey::parse(&raw).unwrap());
        let shard = test_support::master_of(&redis, &layout.record(hash.as_str())).await;
        keys.push((raw, shard));
    }
    let lost_shard = keys[0].1.clone();
    let replicas = test_support::replicas_of(&redis, &lost_shard).await;
    assert!(!replicas.is_empty(), "the shard has a replica");
    assert!(
        keys.iter().any(|(_, shard)| *shard != lost_shard),
        "twelve keys on one shard"
    );

    // Every key in turn, until told to stop. The fleet's limiter is fail-open (the default):
    // while the shard is away its keys are allowed, flagged as degraded.
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let lane = {
        let (answers, stop, client) = (
            Arc::clone(&answers),
            Arc::clone(&stop),
            fleet.client.clone(),
        );
        let url = fleet.limiters[0].url("/v1/check");
        let raws: Vec<String> = keys.iter().map(|(raw, _)| raw.clone()).collect();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (i, raw) in raws.iter().enumerate() {
                    let answer = match client.post(&url).json(&json!({"key": raw})).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let degraded = response.headers().contains_key("x-keymeter-degraded");
                            let body: serde_json::Value = response.json().await.unwrap_or_default();
                            let code = body["code"].as_str().unwrap_or_default().to_owned();
                            Answer {
                                key: i,
                                status,
                                code,
                                degraded,
                            }
                        }
                        // Recorded as status 0, which the final check refuses by name.
                        Err(error) => Answer {
                            key: i,
                            status: 0,
                            code: error.to_string(),
                            degraded: false,
                        },
                    };
                    answers.lock().unwrap().push(answer);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // key-admin's first start found no markers and rebuilt too.
    let rebuilds = |text: &str| {
        crate::metric(
            text,
            "keymeter_projection_rebuilds_total",
            "reason=\"lost\"",
        )
    };
    let rebuilds_before = rebuilds(&crate::metrics_text(&fleet.admin).await);

    // key-admin may not rebuild before the test has seen the shard come back empty.
    let relay_lock = fleet.db.hold_relay_lock().await;
    for node in std::iter::once(&lost_shard).chain(&replicas) {
        test_support::kill_node(node);
    }
    // Past the cluster's node timeout (2 s), so the other shards have seen it fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stores = tokio::task::spawn_blocking(move || {
        stores.restart_stopped();
        stores
    })
    .await
    .unwrap();
    // The shard answers again, empty: its keys are 503 (neither 401 nor allowed unseen),
    // the others are served.
    let back = answers.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let settled = {
            let answers = answers.lock().unwrap();
            let recent = &answers[answers.len().saturating_sub(keys.len())..];
            answers.len() > back + keys.len()
                && recent.iter().all(|a| {
                    if keys[a.key].1 == lost_shard {
                        a.status == 503 && a.code == "UNAVAILABLE"
                    } else {
                        a.status == 200 && !a.degraded
                    }
                })
        };
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lost shard's keys were not 503 and the others 200 within 30 s"
        );
    }
    let cut = answers.lock().unwrap().len();
    relay_lock.release().await;

    // Every key served again: key-admin has rebuilt what the shard lost.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let recovered = {
            let answers = answers.lock().unwrap();
            let recent = &answers[answers.len().saturating_sub(keys.len() * 3)..];
            answers.len() > cut + keys.len() * 3
                && recent.iter().all(|a| a.status == 200 && !a.degraded)
        };
        if recovered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keys not served again within 40 s"
        );
    }
    stop.store(true, Ordering::Relaxed);
    lane.await.unwrap();

    let answers = answers.lock().unwrap().clone();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 401).collect();
    assert!(refused.is_empty(), "a valid key answered 401: {refused:?}");
    let unavailable_on_lost = answers
        .iter()
        .filter(|a| keys[a.key].1 == lost_shard && a.status == 503 && a.code == "UNAVAILABLE")
        .count();
    assert!(
        unavailable_on_lost > 0,
        "the keys of the lost shard were refused 503 meanwhile"
    );
    let statuses: std::collections::BTreeSet<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [200, 503].into(),
        "200 (served, or allowed by fail-open while the shard was away) and 503 (its keys \
         while lost), every request answered: {:?}",
        answers
            .iter()
            .filter(|a| a.status != 200 && a.status != 503)
            .take(5)
            .collect::<Vec<_>>()
    );

    let hash = pepper.hash_key(&ApiKey::parse(&keys[0].0).unwrap());
    assert!(
        storage::redis_cluster::projection::get_key(&redis, &layout, hash.as_str())
            .await
            .unwrap()
            .found()
            .is_some(),
        "the lost record is back in Redis"
    );
    assert!(
        rebuilds(&crate::metrics_text(&fleet.admin).await) > rebuilds_before,
        "key-admin rebuilt because record groups were lost"
    );
    eprintln!(
        "{} answers, {unavailable_on_lost} of them 503 for keys of the lost shard",
        answers.len()
    );
    fleet.stop().await;
    drop(stores);
}
