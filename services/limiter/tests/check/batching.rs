//! The check batcher against the real Redis Cluster: checks of one key that arrive together
//! share script calls and are judged exactly as if each had been sent alone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use domain::events::V1;
use domain::{Algorithm, KeyRecord, Limit};
use limiter::batching::{CheckBatcher, Reply};
use limiter::breaker::{Breaker, State};
use serde_json::json;
use storage::redis_cluster::check::Verdict;
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use tokio::task::JoinHandle;
use uuid::Uuid;

fn record(limit: u64) -> Arc<KeyRecord> {
    Arc::new(KeyRecord {
        v: V1,
        key_id: Uuid::now_v7(),
        plan_id: Uuid::now_v7(),
        owner_id: None,
        enabled: true,
        revoked: false,
        expires_at: None,
        limits: vec![Limit {
            name: "per_hour".into(),
            algorithm: Algorithm::SlidingLog,
            limit,
            window_ms: 3_600_000,
            burst: None,
        }],
        credits: None,
        metadata: json!({}),
    })
}

fn batcher_on(
    nodes: Vec<String>,
    calls_per_key: usize,
) -> (Arc<CheckBatcher>, Arc<Breaker>, RedisCluster, KeyLayout) {
    let redis = RedisCluster::new(RedisSettings::new(nodes)).unwrap();
    let layout = KeyLayout::new(format!("t{}", test_support::unique_name()));
    let breaker = Arc::new(Breaker::new(3, Duration::from_secs(60)));
    let batcher = CheckBatcher::new(
        redis.clone(),
        layout.clone(),
        Arc::clone(&breaker),
        calls_per_key,
        64,
    );
    (Arc::new(batcher), breaker, redis, layout)
}

fn batcher() -> (Arc<CheckBatcher>, RedisCluster, KeyLayout) {
    let (batcher, _, redis, layout) = batcher_on(test_support::redis_nodes(), 1);
    (batcher, redis, layout)
}

/// `n` concurrent checks of cost 1, the i-th against `record_of(i)`.
fn spawn_checks(
    batcher: &Arc<CheckBatcher>,
    n: usize,
    record_of: impl Fn(usize) -> Arc<KeyRecord>,
) -> Vec<JoinHandle<Reply>> {
    (0..n)
        .map(|i| {
            let (batcher, record) = (Arc::clone(batcher), record_of(i));
            tokio::spawn(async move { batcher.check(record, 1).await })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_checks_of_one_key_share_script_calls_and_admit_exactly_the_limit() {
    let (batcher, redis, layout) = batcher();
    let record = record(50);
    let mut outcomes = Vec::new();
    for task in spawn_checks(&batcher, 200, |_| Arc::clone(&record)) {
        outcomes.push(task.await.unwrap().unwrap());
    }
    let allowed = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Allowed)
        .count();
    assert_eq!(allowed, 50);
    // On this one-thread runtime all 200 callers queue before the first call's answer is
    // read: the first goes alone, the other 199 in batches of at most 64: 5 calls.
    assert!(
        batcher.calls() <= 5,
        "{} calls for 200 checks",
        batcher.calls()
    );
    // Each call reads Redis' clock once: its checks share one `now_ms`.
    let times: HashSet<u64> = outcomes.iter().map(|o| o.now_ms).collect();
    assert!(times.len() as u64 <= batcher.calls());
    // In each call the remaining count falls one by one: the checks were judged in a row.
    let mut remaining: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Allowed)
        .map(|o| o.limits[0].remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..50).collect::<Vec<_>>());
    test_support::delete_prefix(&redis, layout.prefix()).await;
}

#[tokio::test]
async fn a_caller_that_goes_away_strands_no_one_behind_it() {
    let (batcher, redis, layout) = batcher();
    let record = record(1000);
    let tasks = spawn_checks(&batcher, 100, |_| Arc::clone(&record));
    // Let the callers queue their checks (most of them by now), then drop every other
    // caller, the first among them: its check went out inline, so its call slot must be
    // handed over to a task that sends the checks queued behind it. A dropped caller's
    // check still waiting is not judged at all.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    let mut kept = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        if i % 2 == 0 {
            task.abort();
        } else {
            kept.push(task);
        }
    }
    for task in kept {
        let outcome = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a check was stranded behind the dropped caller")
            .unwrap()
            .unwrap();
        assert_eq!(outcome.verdict, Verdict::Allowed);
    }
    // The key's queue is empty again: a new check goes straight through.
    let again = tokio::time::timeout(Duration::from_secs(10), batcher.check(record, 1))
        .await
        .expect("the key's queue was left behind")
        .unwrap();
    assert_eq!(again.verdict, Verdict::Allowed);
    test_support::delete_prefix(&redis, layout.prefix()).await;
}

#[tokio::test]
async fn the_two_secrets_of_a_rotating_key_share_batches() {
    let (batcher, redis, layout) = batcher();
    let old_secret = record(1000);
    // The record cached under the new secret: another allocation, the same key and limits.
    let new_secret = Arc::new((*old_secret).clone());
    let tasks = spawn_checks(&batcher, 200, |i| {
        Arc::clone(if i % 2 == 0 { &old_secret } else { &new_secret })
    });
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().verdict, Verdict::Allowed);
    }
    assert!(
        batcher.calls() <= 5,
        "{} calls for 200 checks",
        batcher.calls()
    );
    test_support::delete_prefix(&redis, layout.prefix()).await;
}

#[tokio::test]
async fn a_failed_call_answers_every_waiting_check_and_counts_once_for_the_breaker() {
    // Nothing listens on port 1.
    let (batcher, breaker, _, _) = batcher_on(vec!["redis://127.0.0.1:1".to_owned()], 1);
    let record = record(1000);
    for task in spawn_checks(&batcher, 100, |_| Arc::clone(&record)) {
        assert!(task.await.unwrap().is_err());
    }
    assert_eq!(
        batcher.calls(),
        1,
        "the checks queued behind the failed call got its error, no call of their own"
    );
    assert_eq!(
        breaker.state(),
        State::Closed,
        "one failed call is one failure (the threshold is 3), not 100"
    );
}

#[tokio::test]
async fn with_batching_off_every_check_is_its_own_call_and_still_exact() {
    let (batcher, _, redis, layout) = batcher_on(test_support::redis_nodes(), 0);
    let record = record(50);
    let mut allowed = 0;
    for task in spawn_checks(&batcher, 200, |_| Arc::clone(&record)) {
        if task.await.unwrap().unwrap().verdict == Verdict::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50);
    assert_eq!(batcher.calls(), 200);
    test_support::delete_prefix(&redis, layout.prefix()).await;
}
