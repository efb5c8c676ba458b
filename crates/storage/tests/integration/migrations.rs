use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use storage::postgres::{
    applied_migrations, embedded_migration_count, revert_all_migrations, run_pending_migrations,
};
use test_support::TestDb;

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    table_name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn tables(db: &TestDb) -> Vec<String> {
    let mut conn = db.connection().await;
    let rows: Vec<TableName> = diesel::sql_query(
        "SELECT table_name::text AS table_name FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name NOT LIKE 'usage_logs_2%' \
         ORDER BY 1",
    )
    .load(&mut conn)
    .await
    .expect("list tables");
    rows.into_iter().map(|r| r.table_name).collect()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDb::empty().await;
    let count = embedded_migration_count().expect("embedded migrations");

    let applied = run_pending_migrations(&db.url).await.expect("up");
    assert_eq!(applied.len(), count);
    assert_eq!(
        tables(&db).await,
        vec![
            "__diesel_schema_migrations",
            "admin_tokens",
            "api_keys",
            "audit_log",
            "ingested_batches",
            "outbox",
            "plans",
            "usage_logs",
        ]
    );
    assert!(
        run_pending_migrations(&db.url)
            .await
            .expect("second up")
            .is_empty(),
        "a second run applies nothing"
    );

    let reverted = revert_all_migrations(&db.url).await.expect("down");
    assert_eq!(reverted.len(), count);
    assert_eq!(tables(&db).await, vec!["__diesel_schema_migrations"]);
    assert!(applied_migrations(&db.url).await.expect("list").is_empty());

    let again = run_pending_migrations(&db.url).await.expect("up again");
    assert_eq!(again, applied);
    assert_eq!(
        applied_migrations(&db.url).await.expect("list").len(),
        count
    );
}

async fn partitions(conn: &mut diesel_async::AsyncPgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'usage_logs'::regclass",
    )
    .get_result::<Count>(conn)
    .await
    .expect("count")
    .n
}

#[tokio::test]
async fn usage_partitions_are_created_ahead_and_dropped_past_retention() {
    let db = TestDb::migrated().await;
    let mut conn = db.connection().await;
    // The migration creates yesterday through a week ahead.
    assert_eq!(partitions(&mut conn).await, 9);

    let created: Vec<Count> = diesel::sql_query(
        "SELECT usage_logs_ensure_partitions((now() AT TIME ZONE 'UTC')::date, 14)::bigint AS n",
    )
    .load(&mut conn)
    .await
    .expect("ensure");
    assert_eq!(created[0].n, 6, "only the days not there yet are created");
    assert_eq!(partitions(&mut conn).await, 15);

    // A row today lands in today's partition; a row before any partition is refused.
    diesel::sql_query(
        "INSERT INTO usage_logs (key_id, minute, allowed) \
         VALUES (gen_random_uuid(), date_trunc('minute', now()), 1)",
    )
    .execute(&mut conn)
    .await
    .expect("insert today");
    let too_old = diesel::sql_query(
        "INSERT INTO usage_logs (key_id, minute, allowed) VALUES (gen_random_uuid(), '2000-01-01', 1)",
    )
    .execute(&mut conn)
    .await;
    assert!(too_old.is_err());

    let dropped: Vec<Count> = diesel::sql_query(
        "SELECT usage_logs_drop_partitions_before((now() AT TIME ZONE 'UTC')::date)::bigint AS n",
    )
    .load(&mut conn)
    .await
    .expect("drop");
    assert_eq!(
        dropped[0].n, 1,
        "yesterday's partition is past a retention of 0 days"
    );
    let rows: Vec<Count> = diesel::sql_query("SELECT count(*) AS n FROM usage_logs")
        .load(&mut conn)
        .await
        .expect("count rows");
    assert_eq!(rows[0].n, 1, "today's row survives");
}

#[tokio::test]
async fn key_hash_column_refuses_anything_but_a_hash() {
    let db = TestDb::migrated().await;
    let mut conn = db.connection().await;
    diesel::sql_query("INSERT INTO plans (id, name) VALUES (gen_random_uuid(), 'p')")
        .execute(&mut conn)
        .await
        .expect("plan");
    let raw_key = diesel::sql_query(
        "INSERT INTO api_keys (id, plan_id, prefix, start, key_hash) \
         SELECT gen_random_uuid(), id, 'km', 'km_abcde', 'km_abcdefghijklmnopqrstuvwxyz0123' FROM plans",
    )
    .execute(&mut conn)
    .await;
    assert!(raw_key.is_err(), "a raw key is not a 64-hex hash");
}
