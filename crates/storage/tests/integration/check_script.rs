use domain::{Algorithm, CreditsConfig, Limit, Refill};
use storage::redis_cluster::check::{
    CheckOutcome, CheckRequest, KeyLimits, Verdict, check, check_many,
};
use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisClusterError, RedisSettings};
use uuid::Uuid;

struct Fixture {
    cluster: RedisCluster,
    layout: KeyLayout,
    key_id: Uuid,
}

impl Fixture {
    fn new() -> Self {
        Self {
            cluster: RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap(),
            layout: KeyLayout::new(format!("t{}", test_support::unique_name())),
            key_id: Uuid::now_v7(),
        }
    }

    async fn run(
        &self,
        limits: &[Limit],
        cost: u64,
        credits: Option<&CreditsConfig>,
    ) -> CheckOutcome {
        check(
            &self.cluster,
            &self.layout,
            CheckRequest {
                key_id: self.key_id,
                cost,
                limits,
                credits,
            },
        )
        .await
        .unwrap()
    }

    async fn run_many(
        &self,
        limits: &[Limit],
        costs: &[u64],
        credits: Option<&CreditsConfig>,
    ) -> Vec<CheckOutcome> {
        let key = KeyLimits {
            key_id: self.key_id,
            limits,
            credits,
        };
        check_many(&self.cluster, &self.layout, key, costs)
            .await
            .unwrap()
    }

    async fn cleanup(&self) {
        test_support::delete_prefix(&self.cluster, self.layout.prefix()).await;
    }
}

fn limit(name: &str, algorithm: Algorithm, limit: u64, window_ms: u64) -> Limit {
    Limit {
        name: name.to_owned(),
        algorithm,
        limit,
        window_ms,
        burst: None,
    }
}

const ALL: [Algorithm; 4] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
    Algorithm::SlidingLog,
    Algorithm::TokenBucket,
];

#[tokio::test]
async fn each_algorithm_allows_its_limit_then_refuses_with_a_retry_time() {
    for algorithm in ALL {
        let f = Fixture::new();
        // 5 per hour: a refill or a window change during the test is all but impossible.
        let limits = [limit("l", algorithm, 5, 3_600_000)];
        for expected_remaining in (0..5).rev() {
            let outcome = f.run(&limits, 1, None).await;
            assert_eq!(outcome.verdict, Verdict::Allowed, "{algorithm:?}");
            assert_eq!(
                outcome.limits[0].remaining, expected_remaining,
                "{algorithm:?}"
            );
        }
        let refused = f.run(&limits, 1, None).await;
        assert_eq!(refused.verdict, Verdict::RateLimited, "{algorithm:?}");
        assert_eq!(refused.limits[0].remaining, 0);
        assert!(
            refused.retry_after_ms > 0 && refused.retry_after_ms <= 3_600_000,
            "{algorithm:?}: {refused:?}"
        );
        assert!(refused.now_ms > 1_700_000_000_000, "Redis time in ms");
        f.cleanup().await;
    }
}

#[tokio::test]
async fn a_refused_check_consumes_nothing_from_any_limit() {
    let f = Fixture::new();
    let limits = [
        limit("wide", Algorithm::FixedWindow, 10, 3_600_000),
        limit("narrow", Algorithm::SlidingLog, 2, 3_600_000),
    ];
    f.run(&limits, 1, None).await;
    f.run(&limits, 1, None).await;
    let refused = f.run(&limits, 1, None).await;
    assert_eq!(refused.verdict, Verdict::RateLimited);
    assert_eq!(
        refused.limits[0].remaining, 8,
        "the wide limit was not charged"
    );
    let only_wide = f.run(&limits[..1], 1, None).await;
    assert_eq!(only_wide.limits[0].remaining, 7);
    f.cleanup().await;
}

#[tokio::test]
async fn cost_counts_units() {
    for algorithm in ALL {
        let f = Fixture::new();
        let limits = [limit("l", algorithm, 5, 3_600_000)];
        assert_eq!(f.run(&limits, 3, None).await.verdict, Verdict::Allowed);
        assert_eq!(
            f.run(&limits, 3, None).await.verdict,
            Verdict::RateLimited,
            "{algorithm:?}"
        );
        let fits = f.run(&limits, 2, None).await;
        assert_eq!(fits.verdict, Verdict::Allowed, "{algorithm:?}");
        assert_eq!(fits.limits[0].remaining, 0);
        assert_eq!(f.run(&limits, 6, None).await.verdict, Verdict::RateLimited);
        f.cleanup().await;
    }
}

#[tokio::test]
async fn token_bucket_allows_the_burst_then_one_unit_per_interval() {
    let f = Fixture::new();
    let limits = [Limit {
        burst: Some(20),
        ..limit("tb", Algorithm::TokenBucket, 10, 1000)
    }];
    for _ in 0..20 {
        assert_eq!(f.run(&limits, 1, None).await.verdict, Verdict::Allowed);
    }
    let refused = f.run(&limits, 1, None).await;
    assert_eq!(refused.verdict, Verdict::RateLimited);
    assert!(
        refused.retry_after_ms <= 100,
        "one unit every 100 ms: {refused:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(refused.retry_after_ms + 5)).await;
    assert_eq!(f.run(&limits, 1, None).await.verdict, Verdict::Allowed);
    f.cleanup().await;
}

#[tokio::test]
async fn windows_let_requests_through_again_once_they_pass() {
    for algorithm in ALL {
        let f = Fixture::new();
        let limits = [limit("l", algorithm, 2, 300)];
        f.run(&limits, 1, None).await;
        f.run(&limits, 1, None).await;
        let refused = f.run(&limits, 1, None).await;
        assert_eq!(refused.verdict, Verdict::RateLimited, "{algorithm:?}");
        // Sliding windows may need up to two windows to forget a full one.
        tokio::time::sleep(std::time::Duration::from_millis(610)).await;
        assert_eq!(
            f.run(&limits, 1, None).await.verdict,
            Verdict::Allowed,
            "{algorithm:?}"
        );
        f.cleanup().await;
    }
}

#[tokio::test]
async fn credits_are_spent_refused_without_spending_and_refilled() {
    let f = Fixture::new();
    projection::reset_credits(&f.cluster, &f.layout, f.key_id, 5)
        .await
        .unwrap();
    let credits = CreditsConfig { refill: None };
    let spent = f.run(&[], 2, Some(&credits)).await;
    assert_eq!(spent.verdict, Verdict::Allowed);
    assert_eq!(spent.credits_remaining, Some(3));
    let refused = f.run(&[], 4, Some(&credits)).await;
    assert_eq!(refused.verdict, Verdict::CreditsExhausted);
    assert_eq!(refused.credits_remaining, Some(3));
    assert_eq!(
        projection::credits_remaining(&f.cluster, &f.layout, f.key_id)
            .await
            .unwrap(),
        Some(3)
    );

    // A refill sets the balance back to its amount; it does not add up.
    let refilling = CreditsConfig {
        refill: Some(Refill {
            amount: 10,
            interval_ms: 200,
        }),
    };
    assert_eq!(
        f.run(&[], 3, Some(&refilling)).await.credits_remaining,
        Some(0)
    );
    let empty = f.run(&[], 1, Some(&refilling)).await;
    assert_eq!(empty.verdict, Verdict::CreditsExhausted);
    assert!(empty.retry_after_ms <= 200);
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let refilled = f.run(&[], 1, Some(&refilling)).await;
    assert_eq!(refilled.verdict, Verdict::Allowed);
    assert_eq!(refilled.credits_remaining, Some(9));
    f.cleanup().await;
}

#[tokio::test]
async fn credits_without_a_balance_in_redis_judge_nothing_and_write_nothing() {
    // The balance is lost while the record says the key has credits.
    let f = Fixture::new();
    let refilling = CreditsConfig {
        refill: Some(Refill {
            amount: 10,
            interval_ms: 3_600_000,
        }),
    };
    let limits = [limit("l", Algorithm::FixedWindow, 5, 3_600_000)];
    let lost = check(
        &f.cluster,
        &f.layout,
        CheckRequest {
            key_id: f.key_id,
            cost: 1,
            limits: &limits,
            credits: Some(&refilling),
        },
    )
    .await;
    assert!(
        matches!(lost, Err(RedisClusterError::CreditsLost)),
        "{lost:?}"
    );
    assert!(
        test_support::dump_prefix(&f.cluster, f.layout.prefix())
            .await
            .is_empty(),
        "no balance, no refill clock and no limit state written"
    );
    // key-admin writes the balance where there is none: it is the one that counts.
    projection::init_credits_if_absent(&f.cluster, &f.layout, f.key_id, 5)
        .await
        .unwrap();
    let spent = f.run(&limits, 1, Some(&refilling)).await;
    assert_eq!(spent.verdict, Verdict::Allowed);
    assert_eq!(spent.credits_remaining, Some(4));
    assert_eq!(spent.limits[0].remaining, 4);
    f.cleanup().await;
}

#[tokio::test]
async fn a_rate_limit_refusal_spends_no_credits() {
    let f = Fixture::new();
    projection::reset_credits(&f.cluster, &f.layout, f.key_id, 100)
        .await
        .unwrap();
    let credits = CreditsConfig { refill: None };
    let limits = [limit("l", Algorithm::FixedWindow, 1, 3_600_000)];
    assert_eq!(
        f.run(&limits, 1, Some(&credits)).await.credits_remaining,
        Some(99)
    );
    let refused = f.run(&limits, 1, Some(&credits)).await;
    assert_eq!(refused.verdict, Verdict::RateLimited);
    assert_eq!(refused.credits_remaining, Some(99));
    f.cleanup().await;
}

#[tokio::test]
async fn concurrent_checks_admit_exactly_the_limit() {
    for algorithm in ALL {
        let f = std::sync::Arc::new(Fixture::new());
        let limits = std::sync::Arc::new([limit("l", algorithm, 50, 3_600_000)]);
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let f = std::sync::Arc::clone(&f);
                let limits = std::sync::Arc::clone(&limits);
                tokio::spawn(async move { f.run(&limits[..], 1, None).await.verdict })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            if task.await.unwrap() == Verdict::Allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 50, "{algorithm:?}");
        f.cleanup().await;
    }
}

/// What a batch answers, minus the times (two runs are some milliseconds apart).
fn verdicts(outcomes: &[CheckOutcome]) -> Vec<(Verdict, Option<u64>, Vec<u64>)> {
    outcomes
        .iter()
        .map(|o| {
            let remaining = o.limits.iter().map(|l| l.remaining).collect();
            (o.verdict, o.credits_remaining, remaining)
        })
        .collect()
}

#[tokio::test]
async fn a_batch_of_checks_is_judged_like_the_same_checks_one_by_one() {
    let costs = [2, 2, 2, 1, 1, 3, 1];
    // A single check of one limit without credits takes the script's short path, so one
    // limit alone compares that path with the batch; two limits compare the general one.
    for (algorithm, wide) in ALL.into_iter().flat_map(|a| [(a, false), (a, true)]) {
        let mut limits = vec![limit("l", algorithm, 5, 3_600_000)];
        if wide {
            limits.push(limit("wide", Algorithm::FixedWindow, 100, 3_600_000));
        }
        let (batched, alone) = (Fixture::new(), Fixture::new());
        let together = batched.run_many(&limits, &costs, None).await;
        let mut one_by_one = Vec::new();
        for cost in costs {
            one_by_one.push(alone.run(&limits, cost, None).await);
        }
        assert_eq!(
            verdicts(&together),
            verdicts(&one_by_one),
            "{algorithm:?}, wide: {wide}"
        );
        let allowed: Vec<bool> = together
            .iter()
            .map(|o| o.verdict == Verdict::Allowed)
            .collect();
        assert_eq!(
            allowed,
            [true, true, false, true, false, false, false],
            "{algorithm:?}, wide: {wide}"
        );
        assert!(
            together.iter().all(|o| o.now_ms == together[0].now_ms),
            "one script call, one Redis time"
        );
        // What the batch wrote back is what the single calls wrote: a check of cost 0
        // reads the same state from both.
        assert_eq!(
            verdicts(&[batched.run(&limits, 0, None).await]),
            verdicts(&[alone.run(&limits, 0, None).await]),
            "{algorithm:?}, wide: {wide}"
        );
        batched.cleanup().await;
        alone.cleanup().await;
    }

    // Credits too: 5 of them, spent in order; a refused check spends none.
    let credits = CreditsConfig { refill: None };
    let (batched, alone) = (Fixture::new(), Fixture::new());
    for f in [&batched, &alone] {
        projection::reset_credits(&f.cluster, &f.layout, f.key_id, 5)
            .await
            .unwrap();
    }
    let together = batched.run_many(&[], &costs, Some(&credits)).await;
    let mut one_by_one = Vec::new();
    for cost in costs {
        one_by_one.push(alone.run(&[], cost, Some(&credits)).await);
    }
    assert_eq!(verdicts(&together), verdicts(&one_by_one));
    assert_eq!(together[4].credits_remaining, Some(0));
    for f in [&batched, &alone] {
        let left = projection::credits_remaining(&f.cluster, &f.layout, f.key_id)
            .await
            .unwrap();
        let spent = projection::credits_spent(&f.cluster, &f.layout, f.key_id)
            .await
            .unwrap();
        assert_eq!(left, Some(0));
        assert_eq!(spent.iter().map(|(_, s)| *s).sum::<i64>(), 5);
    }
    batched.cleanup().await;
    alone.cleanup().await;
}
