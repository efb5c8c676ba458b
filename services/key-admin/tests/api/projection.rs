use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use storage::redis_cluster::projection;
use storage::redis_cluster::{RedisCluster, RedisSettings};

use crate::TestApp;

/// Reads `n` key events from the consumer, in arrival order.
async fn next_events(
    consumer: &mut storage::rabbitmq::Consumer,
    n: usize,
) -> Vec<(String, String)> {
    let mut events = Vec::new();
    while events.len() < n {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(event["v"], 1);
        events.push((
            event["key_id"].as_str().unwrap().to_owned(),
            event["change"].as_str().unwrap().to_owned(),
        ));
    }
    events
}

#[tokio::test]
async fn a_relay_that_died_after_the_commit_catches_up_in_order() {
    // No relay runs: every change commits with its outbox row and goes no further, as when
    // key-admin dies between the Postgres commit and the Redis write.
    let app = TestApp::spawn_without_relay().await;
    let mut events = app.rabbit.subscribe_key_events().await;
    let plan = app.default_plan().await;
    let a = app.create_key(json!({"plan_id": plan["id"]})).await;
    let b = app.create_key(json!({"plan_id": plan["id"]})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    app.patch(&format!("/v1/keys/{a_id}"), json!({"enabled": false}))
        .await;
    app.post(&format!("/v1/keys/{b_id}/revoke"), json!({}))
        .await;
    app.delete(&format!("/v1/keys/{a_id}")).await;
    let raw_b = b["key"].as_str().unwrap();
    assert!(
        app.record_of(raw_b).await.is_none(),
        "nothing reached Redis yet"
    );

    // A relay that cannot reach Redis fails on the first row and keeps every row.
    let unreachable =
        RedisCluster::new(RedisSettings::new(vec!["redis://127.0.0.1:1".into()])).unwrap();
    let broken = app.another_relay(unreachable);
    assert!(broken.pass().await.is_err());

    // Recovery: the relay applies all five changes, then publishes them, in order.
    let outcome = app.relay.drain().await.unwrap();
    assert_eq!((outcome.projected, outcome.published), (5, 5));
    assert_eq!(
        next_events(&mut events, 5).await,
        vec![
            (a_id.to_owned(), "updated".to_owned()),
            (b_id.to_owned(), "updated".to_owned()),
            (a_id.to_owned(), "updated".to_owned()),
            (b_id.to_owned(), "revoked".to_owned()),
            (a_id.to_owned(), "deleted".to_owned()),
        ]
    );
    assert!(app.record_of(raw_b).await.unwrap().revoked);
    assert!(
        app.record_of(a["key"].as_str().unwrap()).await.is_none(),
        "deleted"
    );
    assert_eq!(
        app.relay.drain().await.unwrap().projected,
        0,
        "nothing repeats"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_lost_projection_is_rebuilt_without_anyone_acting() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key = app
        .create_key(json!({"plan_id": plan["id"], "credits": {"remaining": 42}}))
        .await;
    let raw = key["key"].as_str().unwrap().to_owned();
    app.eventually("projected", || async {
        app.record_of(&raw).await.is_some()
    })
    .await;
    app.eventually("epoch written", || async {
        app.groups_lost().await.is_empty()
    })
    .await;

    // Everything under this test's prefix disappears, as in a FLUSHALL of the cluster. The
    // relay lock keeps the rebuild from starting before the test has looked.
    let relay_lock = app.db.hold_relay_lock().await;
    assert!(test_support::delete_prefix(&app.redis, app.layout.prefix()).await >= 3);
    assert!(app.record_of(&raw).await.is_none());
    relay_lock.release().await;
    let took = app
        .eventually("rebuilt", || async { app.record_of(&raw).await.is_some() })
        .await;
    let key_id: uuid::Uuid = key["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        storage::redis_cluster::projection::credits_remaining(&app.redis, &app.layout, key_id)
            .await
            .unwrap(),
        Some(42)
    );
    eprintln!("projection rebuilt {took:?} after the flush");
    app.stop().await;
}

#[tokio::test]
async fn one_shard_that_lost_its_data_is_noticed_and_rebuilt() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let keys = app.create_projected_keys(&plan, 8).await;
    app.eventually("epoch written", || async {
        app.groups_lost().await.is_empty()
    })
    .await;

    // One master loses what it held of this test's projection, as if it and its replica had
    // restarted empty; the other masters keep theirs.
    let first = domain::ApiKey::parse(&keys[0]).unwrap();
    let first_record = app.layout.record(app.pepper.hash_key(&first).as_str());
    let lost_shard = test_support::master_of(&app.redis, &first_record).await;
    let relay_lock = app.db.hold_relay_lock().await;
    test_support::delete_prefix_on(&lost_shard, app.layout.prefix()).await;
    assert!(app.record_of(&keys[0]).await.is_none());
    let lost = app.groups_lost().await;
    assert!(
        !lost.is_empty() && lost.len() < projection::RECORD_GROUPS,
        "only that shard's groups lost their marker: {}",
        lost.len()
    );
    relay_lock.release().await;

    let took = app
        .eventually("rebuilt", || async {
            app.groups_lost().await.is_empty()
                && futures_util::future::join_all(keys.iter().map(|raw| app.record_of(raw)))
                    .await
                    .iter()
                    .all(Option::is_some)
        })
        .await;
    eprintln!("one lost shard rebuilt {took:?} after its data went");
    app.stop().await;
}

#[tokio::test]
async fn resync_rebuilds_on_demand_and_counts() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    app.default_plan().await;
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let gone = app.create_key(json!({"plan_id": plan["id"]})).await;
    app.delete(&format!("/v1/keys/{}", gone["id"].as_str().unwrap()))
        .await;
    let raw = key["key"].as_str().unwrap().to_owned();
    app.eventually("projected", || async {
        app.record_of(&raw).await.is_some()
    })
    .await;
    app.eventually("deleted key removed", || async {
        app.record_of(gone["key"].as_str().unwrap()).await.is_none()
    })
    .await;
    let deleted =
        test_support::delete_prefix(&app.redis, &format!("{}:key:", app.layout.prefix())).await;
    assert_eq!(deleted, 1);

    let (status, counts) = app.post("/v1/ops/resync", json!({})).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts, json!({"keys": 1, "plans": 2}));
    assert!(app.record_of(&raw).await.is_some());
    assert!(app.record_of(gone["key"].as_str().unwrap()).await.is_none());

    let writer = app.token_with(&["keys:write"]).await;
    let (status, _) = app
        .send(reqwest::Method::POST, "/v1/ops/resync", Some(&writer), None)
        .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn a_resync_waits_for_the_relay_lock() {
    use diesel_async::RunQueryDsl;
    // A resync that ran beside an outbox pass could write a key's old record after the pass
    // applied its deletion, and bring the key back. So a resync holds the relay lock, and
    // changes committed meanwhile are applied after it.
    let app = TestApp::spawn_without_relay().await;
    let plan = app.default_plan().await;
    let key = app.create_key(json!({"plan_id": plan["id"]})).await;
    let raw = key["key"].as_str().unwrap().to_owned();

    // Someone holds the relay lock (an outbox pass in another key-admin, say).
    let mut holder = app.db.pool().get().await.unwrap();
    diesel::sql_query("BEGIN")
        .execute(&mut holder)
        .await
        .unwrap();
    storage::repositories::outbox::lock_relay(&mut holder)
        .await
        .unwrap();
    let relay = std::sync::Arc::clone(&app.relay);
    let resync = tokio::spawn(async move { relay.resync().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!resync.is_finished(), "the resync waits for the lock");
    assert!(
        app.record_of(&raw).await.is_none(),
        "and has written nothing"
    );

    diesel::sql_query("COMMIT")
        .execute(&mut holder)
        .await
        .unwrap();
    let counts = resync.await.unwrap().unwrap();
    assert_eq!(counts.keys, 1);
    assert!(app.record_of(&raw).await.is_some(), "then it rebuilds");
    app.stop().await;
}

#[derive(diesel::QueryableByName)]
struct OutboxCounts {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    relayed: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pending: i64,
}

async fn outbox_counts(app: &TestApp) -> (i64, i64) {
    use diesel_async::RunQueryDsl;
    let mut conn = app.db.connection().await;
    let counts: OutboxCounts = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE processed_at IS NOT NULL) AS relayed, \
                count(*) FILTER (WHERE processed_at IS NULL) AS pending FROM outbox",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    (counts.relayed, counts.pending)
}

#[tokio::test]
async fn relayed_outbox_rows_older_than_the_retention_are_pruned_and_pending_ones_kept() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::spawn_without_relay().await;
    let plan = app.default_plan().await;
    for _ in 0..3 {
        app.create_key(json!({"plan_id": plan["id"]})).await;
    }
    app.relay.drain().await.unwrap();
    let (relayed, pending) = outbox_counts(&app).await;
    assert_eq!(pending, 0);
    // Two relayed rows went out ten days ago; one change is written but not relayed, and
    // is as old.
    app.create_key(json!({"plan_id": plan["id"]})).await;
    let mut conn = app.db.connection().await;
    diesel::sql_query(
        "UPDATE outbox SET processed_at = now() - interval '10 days' \
         WHERE id IN (SELECT id FROM outbox WHERE processed_at IS NOT NULL ORDER BY id LIMIT 2)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query(
        "UPDATE outbox SET created_at = now() - interval '10 days' WHERE processed_at IS NULL",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let mut pruning = app.another_relay(app.redis.clone());
    assert_eq!(
        pruning.prune_outbox().await.unwrap(),
        0,
        "no retention set: nothing pruned"
    );
    pruning.outbox_retention = Some(Duration::from_secs(7 * 86_400));
    assert_eq!(pruning.prune_outbox().await.unwrap(), 2);
    assert_eq!(outbox_counts(&app).await, (relayed - 2, 1));
    assert_eq!(
        pruning.prune_outbox().await.unwrap(),
        0,
        "nothing left to prune"
    );

    // The pending change still goes out.
    let outcome = app.relay.drain().await.unwrap();
    assert_eq!((outcome.projected, outcome.published), (1, 1));
    app.stop().await;
}
