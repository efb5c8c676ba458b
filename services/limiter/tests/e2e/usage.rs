//! Usage leaves the limiter as batches on RabbitMQ, and a SIGTERM flushes what is counted.

use std::time::Duration;

use domain::{Algorithm, Limit, UsageBatch};
use futures_util::StreamExt;
use serde_json::json;
use storage::redis_cluster::projection::KeyLayout;
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{PrivateStores, ServiceProcess};

use crate::own_broker::OwnBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_publishes_every_counted_request_exactly() {
    let isolation = test_support::Isolation::new().await;
    let rabbit = &isolation.rabbit;
    let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
    let layout = KeyLayout::new(isolation.redis_prefix.clone());
    let (key, key_id) = crate::put_key(
        &redis,
        &layout,
        vec![Limit {
            name: "m".into(),
            algorithm: Algorithm::FixedWindow,
            limit: 30,
            window_ms: 3_600_000,
            burst: None,
        }],
    )
    .await;
    let (mut command, addr) = crate::serve_isolated(&isolation);
    command
        .env("KEYMETER_INSTANCE", "usage-test")
        // Only the flush at shutdown can publish within this test.
        .env("KEYMETER_USAGE_FLUSH_MS", "600000");
    let limiter = ServiceProcess::start(command, addr).await;
    let client = reqwest::Client::new();
    let (mut allowed, mut denied) = (0, 0);
    for _ in 0..50 {
        let status = client
            .post(limiter.url("/v1/check"))
            .json(&json!({"key": key.expose(), "cost": 2}))
            .send()
            .await
            .unwrap()
            .status();
        match status.as_u16() {
            200 => allowed += 1,
            429 => denied += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((allowed, denied), (15, 35), "30 units at cost 2");
    assert!(limiter.terminate().await.success());

    let channel = rabbit.connection.create_channel().await.unwrap();
    let mut consumer =
        storage::rabbitmq::consume(&channel, &rabbit.topology.usage_queue(), "t", 10)
            .await
            .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a batch was published at shutdown")
        .unwrap()
        .unwrap();
    let batch = UsageBatch::decode(&delivery.data).expect("a valid batch");
    assert_eq!(batch.source, "usage-test");
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some(batch.batch_id.to_string())
    );
    let (a, d, c): (u64, u64, u64) = batch
        .entries
        .iter()
        .filter(|e| e.key_id == key_id)
        .fold((0, 0, 0), |(a, d, c), e| {
            (a + e.allowed, d + e.denied, c + e.cost)
        });
    assert_eq!((a, d, c), (15, 35, 30));
    isolation.cleanup().await;
}

/// A broker that hangs (stopped with SIGSTOP: connections stay open, nothing is answered)
/// must not keep a terminating limiter alive past its budget: the final flush gives up at
/// its deadline (10 s), says how much usage it could not publish, and the process exits,
/// well inside Kubernetes' grace period, instead of being SIGKILLed with nothing said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_by_the_flush_deadline_while_rabbitmq_hangs() {
    let broker = OwnBroker::start();
    let (key, _) = crate::put_key(
        &broker.redis,
        &broker.layout,
        vec![Limit {
            name: "m".into(),
            algorithm: Algorithm::FixedWindow,
            limit: 1000,
            window_ms: 3_600_000,
            burst: None,
        }],
    )
    .await;
    let log_path = std::env::temp_dir().join(format!("limiter-{}.log", broker.layout.prefix()));
    let mut command = broker.limiter_command();
    command
        // Only the flush at shutdown would publish within this test.
        .env("KEYMETER_USAGE_FLUSH_MS", "600000")
        .stderr(std::process::Stdio::from(
            std::fs::File::create(&log_path).unwrap(),
        ));
    let limiter = ServiceProcess::start_with_own_stderr(command, broker.addr).await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let status = client
            .post(limiter.url("/v1/check"))
            .json(&json!({"key": key.expose()}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    // The limiter's link to the broker is up (its key events queue is bound on start).
    tokio::time::sleep(Duration::from_secs(1)).await;

    /// Wakes the broker however the test ends, so its clean-up can stop it.
    struct Resume<'a>(&'a PrivateStores);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            if let Err(error) = self.0.signal_rabbitmq("CONT") {
                eprintln!("{error}");
            }
        }
    }
    broker.stores.signal_rabbitmq("STOP").unwrap();
    let resume = Resume(&broker.stores);
    let terminated_at = std::time::Instant::now();
    let exit = limiter.terminate().await;
    let took = terminated_at.elapsed();
    drop(resume);

    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        log.contains("exiting with usage not published"),
        "the exit says that usage was left unpublished:\n{log}"
    );
    assert!(exit.success(), "{exit}");
    // The flush deadline is 10 s; Kubernetes waits 45 s (deploy/k8s). A bound, not a speed.
    assert!(
        took < Duration::from_secs(20),
        "took {took:?} to exit after SIGTERM"
    );
    eprintln!("exited {took:?} after SIGTERM with the broker hung");
    broker.cleanup().await;
}
