use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use domain::Pepper;
use test_support::{TEST_PEPPER, TestDb, service_command};

use crate::BINARY;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn migrate_applies_everything_once() {
    let db = TestDb::empty().await;
    let run = || {
        service_command(BINARY)
            .arg("migrate")
            .env("KEYMETER_DATABASE_URL", &db.url)
            .output()
            .expect("run migrate")
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).starts_with("migrations: applied"));
    let second = run();
    assert!(second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        "migrations: up to date"
    );
}

#[tokio::test]
async fn token_create_prints_the_token_once_and_stores_its_hash() {
    let db = TestDb::migrated().await;
    let output = service_command(BINARY)
        .args([
            "token",
            "create",
            "--name",
            "ci",
            "--scopes",
            "keys:read,keys:write",
        ])
        .env("KEYMETER_DATABASE_URL", &db.url)
        .env("KEYMETER_PEPPER", TEST_PEPPER)
        .output()
        .expect("run token create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("the token is printed");
    assert!(token.starts_with("kmadmin_"));

    let hash = Pepper::from_hex(TEST_PEPPER)
        .unwrap()
        .hash_admin_token(token)
        .into_string();
    let mut conn = db.connection().await;
    let found: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM admin_tokens WHERE token_hash = $1 \
         AND scopes = ARRAY['keys:read','keys:write']",
    )
    .bind::<diesel::sql_types::Text, _>(&hash)
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(found.n, 1);
    let leaked: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM admin_tokens t, audit_log a \
         WHERE t::text LIKE '%' || $1 || '%' OR a::text LIKE '%' || $1 || '%'",
    )
    .bind::<diesel::sql_types::Text, _>(token)
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(leaked.n, 0, "the raw token is in no table");
    let audited: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM audit_log WHERE action = 'admin_token.create' AND actor = 'cli'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(audited.n, 1);
}

#[tokio::test]
async fn token_create_refuses_an_unknown_scope() {
    let output = service_command(BINARY)
        .args(["token", "create", "--name", "ci", "--scopes", "keys:delete"])
        .env("KEYMETER_PEPPER", TEST_PEPPER)
        .output()
        .expect("run token create");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown scope \"keys:delete\""), "{stderr}");
}
