//! Every check counted exactly once, end to end with the real binaries: two limiters,
//! usage-ingest and key-admin, while the worker is SIGKILLed twice, RabbitMQ is restarted
//! and PostgreSQL is stopped for 10 s. The Postgres and RabbitMQ here are this test's own
//! (started by the stack script), so stopping them disturbs no other test.

use std::time::Duration;

use test_support::{PrivateStores, free_addr};

use crate::drill::{Drill, Traffic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_is_counted_once_through_worker_kills_a_broker_restart_and_a_postgres_stop() {
    let admin_addr = free_addr();
    let ingest_addr = free_addr();
    let stores = PrivateStores::start([&admin_addr, &free_addr(), &ingest_addr]);
    let drill = Drill {
        database_url: stores.database_url.clone(),
        amqp_url: stores.amqp_url.clone(),
        amqp_prefix: None,
        redis_prefix: format!("t{}", test_support::unique_name()),
        admin_addr,
        ingest_addr,
    };
    drill.migrate();
    let admin = drill.key_admin().await;
    let limiters = [
        drill.limiter("drill-a").await,
        drill.limiter("drill-b").await,
    ];
    let mut ingest = Some(drill.ingest().await);
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (raw, key_id) = drill.key(&client, &admin).await;

    // Half the lanes on each limiter.
    let a = Traffic::start(&client, &raw, &limiters[0].url("/v1/check"), 2);
    let b = Traffic::start(&client, &raw, &limiters[1].url("/v1/check"), 2);
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(2_000).await;
    ingest.take().unwrap().kill();
    pause(1_000).await;
    ingest = Some(drill.ingest().await);
    pause(2_000).await;
    stores.store("stop", "rabbitmq");
    pause(2_000).await;
    stores.store("start", "rabbitmq");
    pause(3_000).await;
    ingest.take().unwrap().kill();
    pause(1_000).await;
    ingest = Some(drill.ingest().await);
    pause(2_000).await;
    stores.store("stop", "postgres");
    pause(10_000).await;
    stores.store("start", "postgres");
    pause(3_000).await;
    let (a, b) = (a.stop().await, b.stop().await);
    // SIGTERM flushes what each limiter still holds.
    for limiter in limiters {
        assert!(limiter.terminate().await.success());
    }
    let (allowed, denied) = (a.0 + b.0, a.1 + b.1);
    assert_eq!(
        (a.2, a.3, b.2, b.3),
        (0, 0, 0, 0),
        "every check was answered 200 or 429"
    );
    assert!(
        allowed > 0 && denied > 0,
        "both outcomes: {allowed} / {denied}"
    );

    let want = (allowed as i64, denied as i64);
    let counted = drill.counted(&client, &admin, &key_id, want).await;
    eprintln!("drill: {allowed} allowed and {denied} denied sent; counted {counted:?}");
    assert_eq!(counted, want, "every check counted exactly once");
    // Nothing arrives later either: no duplicate is waiting in a queue.
    pause(3_000).await;
    assert_eq!(crate::drill::usage(&client, &admin, &key_id).await, counted);
    drop(ingest);
    drop(admin);
    drill.cleanup().await;
}
