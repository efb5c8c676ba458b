//! The deny cache refuses locally exactly while Redis would refuse too, for every algorithm.
//! A shadow key with the same limits and the same history is asked through the script
//! directly: whenever the limiter refuses from its cache, the shadow must be refused too.

use std::time::{Duration, Instant};

use domain::{Algorithm, Limit};
use serde_json::json;
use storage::redis_cluster::check::{CheckRequest, Verdict, check};
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::ServiceProcess;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_refusals_hold_exactly_while_redis_would_refuse() {
    let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
    let isolation = test_support::Isolation::new().await;
    let layout = KeyLayout::new(isolation.redis_prefix.clone());
    let (command, addr) = crate::serve_isolated(&isolation);
    let limiter = ServiceProcess::start(command, addr).await;
    let client = reqwest::Client::new();
    let mut checks = 0.0;

    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::SlidingLog,
        Algorithm::TokenBucket,
    ] {
        let limits = vec![Limit {
            name: "l".into(),
            algorithm,
            limit: 2,
            window_ms: 700,
            burst: None,
        }];
        let (key, _) = crate::put_key(&redis, &layout, limits.clone()).await;
        let shadow = CheckRequest {
            key_id: Uuid::now_v7(),
            cost: 1,
            limits: &limits,
            credits: None,
        };
        let ask = || async {
            client
                .post(format!("http://{addr}/v1/check"))
                .json(&json!({"key": key.expose()}))
                .send()
                .await
                .unwrap()
        };

        // Start just after a window edge (windows are aligned to the epoch), so the refusal
        // below has most of a window left to be cached for.
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 700
            > 50
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Same history on both: requests until the first refusal.
        let retry_ms = loop {
            let response = ask().await;
            checks += 1.0;
            let shadow_verdict = check(&redis, &layout, shadow).await.unwrap().verdict;
            if response.status() == 429 {
                assert_eq!(
                    shadow_verdict,
                    Verdict::RateLimited,
                    "{algorithm:?}: shadow agrees"
                );
                let body: serde_json::Value = response.json().await.unwrap();
                break body["retry_after_ms"].as_u64().unwrap();
            }
        };
        let refused_at = Instant::now();
        let until = Duration::from_millis(retry_ms);

        // While the cache refuses, Redis must refuse the shadow too.
        let mut cached_refusals = 0;
        loop {
            let elapsed = refused_at.elapsed();
            if elapsed + Duration::from_millis(40) >= until {
                break;
            }
            let status = ask().await.status();
            checks += 1.0;
            if status == 429 {
                cached_refusals += 1;
                let truth = check(&redis, &layout, shadow).await.unwrap();
                assert_ne!(
                    truth.verdict,
                    Verdict::Allowed,
                    "{algorithm:?}: cached refusal {elapsed:?} into {until:?}, but Redis would allow"
                );
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        assert!(cached_refusals > 0, "{algorithm:?}");

        // Once the time has passed, the key is let through again.
        tokio::time::sleep(until.saturating_sub(refused_at.elapsed()) + Duration::from_millis(30))
            .await;
        let mut passed = false;
        for _ in 0..40 {
            checks += 1.0;
            if ask().await.status() == 200 {
                passed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(passed, "{algorithm:?}: allowed again after the retry time");
    }

    let text = crate::metrics_text(&limiter).await;
    let scripts = crate::metric(&text, "keymeter_check_scripts_total", "");
    let hits = crate::metric(&text, "keymeter_deny_cache_hits_total", "");
    eprintln!("{checks} checks: {scripts} scripts run, {hits} refusals from the deny cache");
    assert!(hits > 0.0);
    assert_eq!(
        scripts + hits,
        checks,
        "every check either ran the script or was a cached refusal"
    );
    drop(limiter);
    isolation.cleanup().await;
}
