//! Credits reconciliation: Redis's per-minute spend against Postgres's counted cost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use key_admin::reconcile::{Drift, Reconciler};
use serde_json::json;
use storage::redis_cluster::projection;
use uuid::Uuid;

use crate::TestApp;

async fn spend(app: &TestApp, key_id: Uuid, minute: i64, credits: i64) {
    let mut conn = app.redis.connection().await.unwrap();
    let _: () = deadpool_redis::redis::cmd("HSET")
        .arg(app.layout.credits(key_id))
        .arg(format!("s:{minute}"))
        .arg(credits)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Waits until the relay applied every change, the key's creation included: `s:` fields
/// written before that would race its credits reset, which replaces the hash (a rebuild at
/// start can put the record in Redis first).
async fn wait_until_projected(app: &TestApp, key: &serde_json::Value) {
    let raw = key["key"].as_str().unwrap().to_owned();
    app.eventually("the key is projected and nothing is pending", || {
        let raw = raw.clone();
        async move {
            let mut conn = app.db.connection().await;
            let pending = storage::repositories::outbox::pending_count(&mut conn)
                .await
                .unwrap();
            pending == 0 && app.record_of(&raw).await.is_some()
        }
    })
    .await;
}

/// A key with 1 000 credits on `plan`, once the relay applied every change (its creation
/// included); returns its id.
async fn projected_credit_key(app: &TestApp, plan: &serde_json::Value) -> Uuid {
    let key = app
        .create_key(json!({"plan_id": plan["id"], "credits": {"remaining": 1000}}))
        .await;
    wait_until_projected(app, &key).await;
    key["id"].as_str().unwrap().parse().unwrap()
}

/// A reconciler over the test app's stores: 2-minute settle time, 24-hour window.
fn reconciler(app: &TestApp, compare: bool) -> Reconciler {
    Reconciler {
        pool: app.db.pool(),
        redis: app.redis.clone(),
        layout: app.layout.clone(),
        settle: Duration::from_secs(120),
        window: Duration::from_secs(24 * 3600),
        compare,
    }
}

/// The minutes Redis holds a spend for.
async fn spent_minutes(app: &TestApp, key_id: Uuid) -> Vec<i64> {
    projection::credits_spent(&app.redis, &app.layout, key_id)
        .await
        .unwrap()
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

async fn count(app: &TestApp, key_id: Uuid, minute: i64, cost: i64) {
    let at: DateTime<Utc> = DateTime::from_timestamp(minute * 60, 0).unwrap();
    let mut conn = app.db.connection().await;
    diesel::sql_query(
        "INSERT INTO usage_logs (key_id, minute, allowed, cost) VALUES ($1::uuid, $2, 1, $3) \
         ON CONFLICT (key_id, minute) DO UPDATE SET cost = EXCLUDED.cost",
    )
    .bind::<Text, _>(key_id.to_string())
    .bind::<Timestamptz, _>(at)
    .bind::<BigInt, _>(cost)
    .execute(&mut conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn settled_minutes_are_compared_and_a_difference_is_reported() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key_id = projected_credit_key(&app, &plan).await;
    let plain = app.create_key(json!({"plan_id": plan["id"]})).await;
    let plain_id: Uuid = plain["id"].as_str().unwrap().parse().unwrap();

    let now = Utc::now().timestamp() / 60;
    // The first minute Redis has may hold requests from before the credits were set.
    spend(&app, key_id, now - 6, 10).await;
    count(&app, key_id, now - 6, 999).await;
    spend(&app, key_id, now - 5, 7).await;
    count(&app, key_id, now - 5, 7).await;
    spend(&app, key_id, now - 4, 5).await;
    count(&app, key_id, now - 4, 5).await;
    // Not settled yet: usage may still be on its way.
    spend(&app, key_id, now, 50).await;
    // Older than the window: pruned from Redis, never compared.
    spend(&app, key_id, now - 3000, 1).await;
    count(&app, plain_id, now - 5, 40).await;

    let reconciler = reconciler(&app, true);
    assert_eq!(reconciler.run_once().await.unwrap().drifts, vec![]);
    let minutes = spent_minutes(&app, key_id).await;
    assert!(!minutes.contains(&(now - 3000)), "{minutes:?}");
    assert!(minutes.contains(&(now - 6)), "{minutes:?}");

    // A batch counted twice, and a minute whose usage never arrived.
    count(&app, key_id, now - 5, 10).await;
    spend(&app, key_id, now - 3, 4).await;
    assert_eq!(
        reconciler.run_once().await.unwrap().drifts,
        vec![Drift {
            key_id,
            spent: 16,
            counted: 15,
            drift: 7
        }]
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_comparison_off_old_minutes_are_still_pruned_and_nothing_is_reported() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let key_id = projected_credit_key(&app, &plan).await;
    let now = Utc::now().timestamp() / 60;
    spend(&app, key_id, now - 6, 10).await;
    spend(&app, key_id, now - 5, 7).await;
    count(&app, key_id, now - 5, 999).await;
    spend(&app, key_id, now - 3000, 1).await;

    let reconciler = reconciler(&app, false);
    assert_eq!(
        reconciler.run_once().await.unwrap().drifts,
        vec![],
        "nothing compared"
    );
    let minutes = spent_minutes(&app, key_id).await;
    assert!(!minutes.contains(&(now - 3000)), "pruned: {minutes:?}");
    assert!(minutes.contains(&(now - 5)), "kept: {minutes:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_that_cannot_be_read_does_not_stop_the_pass() {
    let app = TestApp::spawn().await;
    let plan = app.default_plan().await;
    let broken = projected_credit_key(&app, &plan).await;
    let fine = projected_credit_key(&app, &plan).await;
    // Not a hash any more: reading its spend fails with WRONGTYPE.
    let mut conn = app.redis.connection().await.unwrap();
    let _: () = deadpool_redis::redis::cmd("SET")
        .arg(app.layout.credits(broken))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let now = Utc::now().timestamp() / 60;
    spend(&app, fine, now - 3000, 1).await;
    spend(&app, fine, now - 6, 10).await;
    spend(&app, fine, now - 5, 7).await;

    let reconciler = reconciler(&app, true);
    let pass = reconciler.run_once().await.unwrap();
    assert_eq!(pass.failed_keys, 1);
    assert!(pass.first_error.is_some());
    assert_eq!(
        pass.drifts,
        vec![Drift {
            key_id: fine,
            spent: 7,
            counted: 0,
            drift: 7
        }],
        "the other key is still compared"
    );
    let minutes = spent_minutes(&app, fine).await;
    assert!(!minutes.contains(&(now - 3000)), "and pruned: {minutes:?}");
    app.stop().await;
}
