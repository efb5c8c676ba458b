//! Key events lost with the broker: a record cached while RabbitMQ is away, then changed
//! with no event to say so, does not outlive the outage. On a broker of this test's own.
//! The limiter drops its whole cache at each failed reconnect (backoff up to 10 s) and once
//! its queue is bound again; this test shows the outcome, not which of those drops it.

use std::time::{Duration, Instant};

use domain::{Algorithm, Limit};
use serde_json::json;
use test_support::ServiceProcess;

use crate::own_broker::OwnBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_while_rabbitmq_is_away_is_refused_once_it_is_back() {
    let broker = OwnBroker::start();
    let (key, mut record) = crate::put_key_record(
        &broker.redis,
        &broker.layout,
        vec![Limit {
            name: "m".into(),
            algorithm: Algorithm::FixedWindow,
            limit: 1_000_000,
            window_ms: 60_000,
            burst: None,
        }],
    )
    .await;
    let mut command = broker.limiter_command();
    // Ten minutes: only a dropped cache can explain a refusal within this test.
    command.env("KEYMETER_CACHE_TTL_MS", "600000");
    let limiter = ServiceProcess::start(command, broker.addr).await;
    let client = reqwest::Client::new();
    let check = || async {
        let response = client
            .post(limiter.url("/v1/check"))
            .json(&json!({"key": key.expose()}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    };

    broker.stores.store("stop", "rabbitmq");
    // The limiter has seen the broker go (its own drop of the cache on that is past).
    let gone = Instant::now();
    loop {
        let ready: serde_json::Value = reqwest::get(limiter.url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["checks"]["rabbitmq"] != "ok" {
            break;
        }
        assert!(gone.elapsed() < Duration::from_secs(10), "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(check().await.0, 200, "cached while the broker is away");
    // key-admin would revoke it in Redis and keep the event until the broker is back; the
    // event may never reach this instance (its queue is new once it reconnects).
    record.revoked = true;
    crate::rewrite_key(&broker.redis, &broker.layout, &key, &record).await;
    broker.stores.store("start", "rabbitmq");
    let back = Instant::now();
    loop {
        let (status, code) = check().await;
        if status == 401 {
            assert_eq!(code, "REVOKED");
            break;
        }
        assert_eq!(status, 200);
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "still served from the stale record 30 s after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("REVOKED {:?} after the broker was back", back.elapsed());
    drop(limiter);
    broker.cleanup().await;
}
