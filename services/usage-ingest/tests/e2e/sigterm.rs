//! SIGTERM under load, as Kubernetes sends it on a rollout: a limiter stops while checks
//! are in flight and usage-ingest stops with batches in hand; both are replaced, and every
//! check that was answered is counted, once.

use std::time::Duration;

use test_support::{Isolation, TestDb, free_addr};

use crate::drill::{Drill, Traffic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_usage() {
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    let drill = Drill {
        database_url: db.url.clone(),
        amqp_url: test_support::amqp_url(),
        amqp_prefix: Some(isolation.rabbit.topology_prefix().to_owned()),
        redis_prefix: isolation.redis_prefix.clone(),
        admin_addr: free_addr(),
        ingest_addr: free_addr(),
    };
    let admin = drill.key_admin().await;
    let first = drill.limiter("rollout-1").await;
    let ingest = drill.ingest().await;
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (raw, key_id) = drill.key(&client, &admin).await;

    let traffic = Traffic::start(&client, &raw, &first.url("/v1/check"), 4);
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(2_000).await;
    // A rollout: the new limiter takes the traffic, the old one gets SIGTERM at once,
    // with requests still arriving and usage not yet flushed.
    let second = drill.limiter("rollout-2").await;
    let stopping = tokio::spawn(first.terminate());
    pause(50).await;
    traffic.send_to(&second);
    assert!(
        stopping.await.unwrap().success(),
        "the old limiter exits cleanly"
    );
    pause(1_500).await;
    // The worker is stopped with batches arriving, and replaced.
    assert!(
        ingest.terminate().await.success(),
        "usage-ingest exits cleanly"
    );
    let ingest = drill.ingest().await;
    pause(1_500).await;
    let (allowed, denied, unanswered, other) = traffic.stop().await;
    assert!(second.terminate().await.success());
    assert_eq!(other, 0, "no answer but 200 or 429");
    assert!(
        allowed > 0 && denied > 0,
        "both outcomes: {allowed} / {denied}"
    );

    let want = (allowed as i64, denied as i64);
    let counted = drill.counted(&client, &admin, &key_id, want).await;
    eprintln!(
        "rollout: {allowed} allowed and {denied} denied answered ({unanswered} refused connections while the old limiter stopped); counted {counted:?}"
    );
    assert_eq!(counted, want, "every answered check counted exactly once");
    drop(ingest);
    drop(admin);
    isolation.cleanup().await;
}
