//! A Redis master SIGKILLed under load, on a cluster of this test's own: every answer
//! follows the failure policy (fail-open: 200 flagged as degraded; fail-closed: 503), never
//! 401, and normal answers come back once the cluster has promoted a replica.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::{Algorithm, Limit};
use serde_json::json;
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{Private, PrivateStores, ServiceProcess};

#[derive(Debug, Clone)]
struct Answer {
    at: Duration,
    status: u16,
    degraded: bool,
}

impl Answer {
    /// Answered by the failure policy rather than by Redis.
    fn by_policy(&self) -> bool {
        self.degraded || self.status == 503
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_answers_200_flagged_through_a_master_kill() {
    let answers = kill_a_master_under_load("open").await;
    let statuses: BTreeSet<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [200].into(),
        "fail-open answers 200, never 401 or 5xx"
    );
    assert!(
        answers.iter().any(|a| a.degraded),
        "the outage was seen and flagged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_through_a_master_kill() {
    let answers = kill_a_master_under_load("closed").await;
    let statuses: BTreeSet<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [200, 503].into(),
        "fail-closed answers 503, never 401"
    );
    assert!(
        answers.iter().all(|a| !a.degraded),
        "no allowed answer without Redis"
    );
}

/// Checks from four lanes; the master of the key's slot is SIGKILLed after a second; the
/// lanes go on until answers are normal again (or 40 s pass). Asserts that they did come
/// back, and returns every answer.
async fn kill_a_master_under_load(policy: &str) -> Vec<Answer> {
    let isolation = test_support::Isolation::new().await;
    let listen = test_support::free_addr();
    let stores = PrivateStores::start_some(
        [
            &test_support::free_addr(),
            &listen,
            &test_support::free_addr(),
        ],
        Private {
            postgres: false,
            rabbitmq: false,
            redis: true,
        },
    );
    let redis = RedisCluster::new(RedisSettings::new(stores.redis_nodes.clone())).unwrap();
    let layout = KeyLayout::new(isolation.redis_prefix.clone());
    let (key, key_id) = crate::put_key(
        &redis,
        &layout,
        vec![Limit {
            name: "huge".into(),
            algorithm: Algorithm::TokenBucket,
            limit: 1_000_000_000,
            window_ms: 1000,
            burst: None,
        }],
    )
    .await;
    let (mut command, _) = crate::serve_isolated(&isolation);
    command
        .env("KEYMETER_LIMITER_LISTEN", listen.to_string())
        .env("KEYMETER_REDIS_NODES", stores.redis_nodes.join(","))
        .env("KEYMETER_FAILURE_POLICY", policy);
    let limiter = ServiceProcess::start(command, listen).await;

    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::new();
    let lanes: Vec<_> = (0..4)
        .map(|_| {
            let (client, answers, stop, url) = (
                client.clone(),
                Arc::clone(&answers),
                Arc::clone(&stop),
                limiter.url("/v1/check"),
            );
            let body = json!({"key": key.expose()});
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = client.post(&url).json(&body).send().await.unwrap();
                    let answer = Answer {
                        at: started.elapsed(),
                        status: response.status().as_u16(),
                        degraded: response.headers().contains_key("x-keymeter-degraded"),
                    };
                    answers.lock().unwrap().push(answer);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let master = test_support::master_of(&redis, &layout.credits(key_id)).await;
    let killed_at = started.elapsed();
    test_support::kill_node(&master);
    // The cluster notices after its node timeout (2 s here) and promotes the replica; then
    // the limiter must be back to normal answers.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let recovered = {
            let answers = answers.lock().unwrap();
            let recent: Vec<&Answer> = answers
                .iter()
                .filter(|a| a.at > started.elapsed().saturating_sub(Duration::from_secs(2)))
                .collect();
            answers.iter().any(Answer::by_policy)
                && !recent.is_empty()
                && recent.iter().all(|a| !a.by_policy())
        };
        if recovered || Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for lane in lanes {
        lane.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let mut per_second = std::collections::BTreeMap::<u64, (u32, u32)>::new();
    for a in &answers {
        let e = per_second.entry(a.at.as_secs()).or_default();
        if a.by_policy() { e.1 += 1 } else { e.0 += 1 }
    }
    eprintln!("fail-{policy}: answers per second (normal, by the policy): {per_second:?}");
    let degraded: Vec<&Answer> = answers.iter().filter(|a| a.by_policy()).collect();
    assert!(
        !degraded.is_empty(),
        "the outage was answered by the policy"
    );
    assert!(
        answers.iter().all(|a| a.status != 401),
        "a store outage is never a 401"
    );
    let last_degraded = degraded.last().map(|a| a.at).unwrap_or_default();
    let normal_after = answers
        .iter()
        .filter(|a| a.at > last_degraded && !a.by_policy())
        .count();
    assert!(
        normal_after > 0,
        "normal answers came back after the failover"
    );
    eprintln!(
        "fail-{policy}: master {master} killed at {:.2} s; {} answers, {} by the policy from {:.2} s to {:.2} s; {normal_after} normal answers after",
        killed_at.as_secs_f64(),
        answers.len(),
        degraded.len(),
        degraded
            .first()
            .map(|a| a.at.as_secs_f64())
            .unwrap_or_default(),
        last_degraded.as_secs_f64(),
    );
    // The limiter's own count of what happened: every answer by the policy is counted as
    // such, and the failed Redis calls behind them as errors or timeouts.
    let text = crate::metrics_text(&limiter).await;
    let by_policy = match policy {
        "open" => crate::metric(&text, "keymeter_checks_degraded_total", ""),
        _ => crate::metric(&text, "keymeter_checks_total", r#"code="UNAVAILABLE""#),
    };
    assert_eq!(by_policy, degraded.len() as f64, "{text}");
    let failed_calls = crate::metric(&text, "keymeter_redis_errors_total", "");
    assert!(failed_calls > 0.0, "failed Redis calls are counted: {text}");
    eprintln!(
        "fail-{policy}: failed Redis calls: {failed_calls} ({} timeouts)",
        crate::metric(&text, "keymeter_redis_errors_total", r#"kind="timeout""#)
    );
    if policy == "closed" {
        assert_eq!(
            crate::metric(&text, "keymeter_checks_degraded_total", ""),
            0.0,
            "fail-closed allows nothing without Redis"
        );
    }
    assert!(limiter.terminate().await.success());
    isolation.rabbit.cleanup().await;
    answers
}
