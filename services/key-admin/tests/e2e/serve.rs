use diesel::QueryableByName;
use diesel::sql_types::{Array, Text};
use diesel_async::RunQueryDsl;
use domain::Pepper;
use test_support::{Isolation, ServiceProcess, TEST_PEPPER, TestDb};

use crate::{BOOTSTRAP_TOKEN, serve_command};

#[derive(QueryableByName, Debug)]
struct TokenRow {
    #[diesel(sql_type = Text)]
    token_hash: String,
    #[diesel(sql_type = Array<Text>)]
    scopes: Vec<String>,
}

async fn stored_tokens(db: &TestDb) -> Vec<TokenRow> {
    let mut conn = db.connection().await;
    diesel::sql_query("SELECT token_hash, scopes FROM admin_tokens")
        .load(&mut conn)
        .await
        .expect("read admin_tokens")
}

#[tokio::test]
async fn serves_health_readiness_and_metrics_then_stops_on_sigterm() {
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    let (command, addr) = serve_command(&db, &isolation);
    let service = ServiceProcess::start(command, addr).await;
    let client = reqwest::Client::new();

    let ready = client.get(service.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body["checks"],
        serde_json::json!({"postgres": "ok", "redis": "ok", "rabbitmq": "ok"})
    );

    let metrics = client.get(service.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"keymeter_http_requests_total{service="key-admin",route="/readyz",method="GET",status="200"} 1"#),
        "{text}"
    );

    let unknown = client.get(service.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    let status = service.terminate().await;
    assert!(status.success(), "graceful exit on SIGTERM, got {status}");
    isolation.cleanup().await;
}

#[tokio::test]
async fn stores_the_bootstrap_token_hashed_and_only_once() {
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    for _ in 0..2 {
        let (command, addr) = serve_command(&db, &isolation);
        let service = ServiceProcess::start(command, addr).await;
        // Stored by a background task: wait for it before stopping.
        for _ in 0..100 {
            if !stored_tokens(&db).await.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        service.terminate().await;
    }
    let tokens = stored_tokens(&db).await;
    assert_eq!(
        tokens.len(),
        1,
        "a second start finds the token and adds none"
    );
    let pepper = Pepper::from_hex(TEST_PEPPER).unwrap();
    assert_eq!(
        tokens[0].token_hash,
        pepper.hash_admin_token(BOOTSTRAP_TOKEN).into_string()
    );
    assert_ne!(tokens[0].token_hash, BOOTSTRAP_TOKEN);
    assert_eq!(tokens[0].scopes, vec!["admin"]);
    isolation.cleanup().await;
}

async fn readiness_with(
    db: &TestDb,
    isolation: &Isolation,
    name: &str,
    value: &str,
) -> (u16, serde_json::Value) {
    let (mut command, addr) = serve_command(db, isolation);
    command.env(name, value);
    let service = ServiceProcess::start(command, addr).await;
    let response = reqwest::get(service.url("/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn readyz_names_the_store_that_does_not_answer() {
    let db = TestDb::migrated().await;
    let isolation = Isolation::new().await;
    // Port 1 on loopback: nothing listens there.
    for (setting, value, store) in [
        ("KEYMETER_REDIS_NODES", "redis://127.0.0.1:1", "redis"),
        (
            "KEYMETER_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "rabbitmq",
        ),
        (
            "KEYMETER_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/keymeter",
            "postgres",
        ),
    ] {
        let (status, body) = readiness_with(&db, &isolation, setting, value).await;
        assert_eq!(status, 503, "{store}: {body}");
        assert_eq!(body["failing"], serde_json::json!([store]), "{body}");
        assert_eq!(body["status"], "unavailable");
    }
    isolation.cleanup().await;
}
