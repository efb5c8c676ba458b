use std::process::Stdio;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use serde_json::{Value, json};
use storage::redis_cluster::{RedisCluster, RedisSettings};
use test_support::{Isolation, ServiceProcess, TEST_PEPPER, TestDb};

use crate::{BOOTSTRAP_TOKEN, serve_command};

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    row: String,
}

/// Every row of every table of the schema, as text.
async fn all_rows(db: &TestDb) -> String {
    let mut conn = db.connection().await;
    let mut text = String::new();
    for table in [
        "plans",
        "api_keys",
        "admin_tokens",
        "audit_log",
        "outbox",
        "usage_logs",
        "ingested_batches",
    ] {
        let rows: Vec<Row> = diesel::sql_query(format!("SELECT t::text AS row FROM {table} t"))
            .load(&mut conn)
            .await
            .unwrap();
        for row in rows {
            text.push_str(&row.row);
            text.push('\n');
        }
    }
    text
}

#[tokio::test]
async fn raw_keys_and_the_pepper_are_in_no_table_redis_value_event_or_log_line() {
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    let mut events = isolation.rabbit.subscribe_key_events().await;
    let prefix = isolation.redis_prefix.clone();
    let log_path = std::env::temp_dir().join(format!("key-admin-{prefix}.log"));
    let log_file = std::fs::File::create(&log_path).unwrap();

    let (mut command, addr) = serve_command(&db, &isolation);
    command
        .env("KEYMETER_LOG", "debug")
        .stderr(Stdio::from(log_file));
    let service = ServiceProcess::start_with_own_stderr(command, addr).await;
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        client
            .request(method, service.url(path))
            .bearer_auth(BOOTSTRAP_TOKEN)
            .json(&body)
            .send()
    };
    // The bootstrap token is stored by a background task: wait until it works.
    for _ in 0..100 {
        if call(reqwest::Method::GET, "/v1/plans", json!({}))
            .await
            .unwrap()
            .status()
            == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plan: Value = call(
        reqwest::Method::POST,
        "/v1/plans",
        json!({"name": "p", "limits": []}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let mut secrets = vec![TEST_PEPPER.to_owned(), BOOTSTRAP_TOKEN.to_owned()];
    let mut key_ids = Vec::new();
    for _ in 0..3 {
        let key: Value = call(
            reqwest::Method::POST,
            "/v1/keys",
            json!({"plan_id": plan["id"], "credits": {"remaining": 9}}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        secrets.push(key["key"].as_str().unwrap().to_owned());
        let id = key["id"].as_str().unwrap().to_owned();
        let rotated: Value = call(
            reqwest::Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            json!({"grace_period_ms": 60000}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        secrets.push(rotated["key"].as_str().unwrap().to_owned());
        key_ids.push(id);
    }
    let token: Value = call(
        reqwest::Method::POST,
        "/v1/admin-tokens",
        json!({"name": "t", "scopes": ["keys:read"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    secrets.push(token["token"].as_str().unwrap().to_owned());
    assert_eq!(secrets.len(), 9);

    // Six events (create and rotate of three keys) show the relay has projected everything.
    let mut event_text = String::new();
    for _ in 0..6 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event")
            .unwrap()
            .unwrap();
        event_text.push_str(&String::from_utf8_lossy(&delivery.data));
    }
    service.terminate().await;

    let redis = RedisCluster::new(RedisSettings::new(test_support::redis_nodes())).unwrap();
    let dump = test_support::dump_prefix(&redis, &prefix).await;
    assert!(
        dump.len() >= 9,
        "3 keys × (2 records + credits) are in Redis: {}",
        dump.len()
    );
    let redis_text = format!("{dump:?}");
    let table_text = all_rows(&db).await;
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        table_text.contains(&key_ids[0]),
        "the search looks at real rows"
    );
    assert!(event_text.contains(&key_ids[0]));

    for secret in &secrets {
        assert!(
            !table_text.contains(secret.as_str()),
            "a secret is in a table"
        );
        assert!(
            !redis_text.contains(secret.as_str()),
            "a secret is in Redis"
        );
        assert!(
            !event_text.contains(secret.as_str()),
            "a secret is in an event"
        );
        assert!(
            !log_text.contains(secret.as_str()),
            "a secret is in the log"
        );
    }
    isolation.cleanup().await;
    let _ = std::fs::remove_file(&log_path);
}
