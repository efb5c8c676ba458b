use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::models::{NewOutboxMessage, OutboxRow};
use crate::schema::outbox;

pub async fn enqueue(conn: &mut AsyncPgConnection, message: &NewOutboxMessage) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values(message)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Takes the relay lock until the end of the current transaction; `false` when another
/// key-admin instance relays right now. One relay at a time keeps each key's changes in order.
/// Advisory locks are database-wide, so the lock is named after the schema: two keymeter
/// schemas in one database (tests) do not share it.
pub async fn try_lock_relay(conn: &mut AsyncPgConnection) -> QueryResult<bool> {
    diesel::sql_query(
        "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ':keymeter-relay')) AS locked",
    )
        .get_result::<Locked>(conn)
        .await
        .map(|row| row.locked)
}

/// Waits for the relay lock and holds it until the end of the current transaction: a full
/// rebuild of the projection takes it, so no outbox pass runs meanwhile and every change
/// committed during the rebuild is applied after it (a key deleted while the rebuild wrote
/// its old record is deleted again, not brought back).
pub async fn lock_relay(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':keymeter-relay'))",
    )
    .execute(conn)
    .await
    .map(drop)
}

/// The oldest messages not yet applied to the Redis projection, in the order written.
pub async fn unprojected(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<OutboxRow>> {
    outbox::table
        .filter(
            outbox::processed_at
                .is_null()
                .and(outbox::projected_at.is_null()),
        )
        .select(OutboxRow::as_select())
        .order(outbox::id.asc())
        .limit(limit)
        .load(conn)
        .await
}

/// The oldest messages projected but whose event is not published yet, in the order written.
pub async fn unpublished(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<OutboxRow>> {
    outbox::table
        .filter(
            outbox::processed_at
                .is_null()
                .and(outbox::projected_at.is_not_null()),
        )
        .select(OutboxRow::as_select())
        .order(outbox::id.asc())
        .limit(limit)
        .load(conn)
        .await
}

pub async fn mark_projected(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<()> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::projected_at.eq(Utc::now()))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn mark_processed(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<()> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::processed_at.eq(Utc::now()))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn record_failure(conn: &mut AsyncPgConnection, id: i64, error: &str) -> QueryResult<()> {
    diesel::update(outbox::table.filter(outbox::id.eq(id)))
        .set((
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::last_error.eq(error),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn pending_count(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    outbox::table
        .filter(outbox::processed_at.is_null())
        .count()
        .get_result(conn)
        .await
}

/// Deletes up to `limit` of the oldest rows whose event went out before `cutoff`; returns
/// how many. Small chunks keep each delete short next to the relay's own statements.
pub async fn delete_processed_before(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM outbox WHERE id IN \
         (SELECT id FROM outbox WHERE processed_at < $1 ORDER BY processed_at LIMIT $2)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(cutoff)
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .execute(conn)
    .await
}
