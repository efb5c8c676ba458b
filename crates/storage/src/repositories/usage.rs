//! `usage_logs` and `ingested_batches`: counting usage batches exactly once, keeping the
//! daily partitions, and reading usage back in buckets.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::UsageLogRow;

/// One batch as `ingested_batches` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReceipt {
    pub batch_id: Uuid,
    pub source: String,
    pub entries: i32,
}

#[derive(QueryableByName)]
struct BatchId {
    #[diesel(sql_type = SqlUuid)]
    batch_id: Uuid,
}

/// Records the batches not seen before and returns their ids; an id already recorded (a
/// redelivery) is left out. Run it in the transaction that adds the counts, so a batch's
/// id and its counts are committed together or not at all.
pub async fn record_new_batches(
    conn: &mut AsyncPgConnection,
    batches: &[BatchReceipt],
) -> QueryResult<Vec<Uuid>> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    // In id order, so two workers holding overlapping redeliveries lock in the same order.
    let mut sorted: Vec<&BatchReceipt> = batches.iter().collect();
    sorted.sort_by_key(|b| b.batch_id);
    let ids: Vec<Uuid> = sorted.iter().map(|b| b.batch_id).collect();
    let sources: Vec<&str> = sorted.iter().map(|b| b.source.as_str()).collect();
    let entries: Vec<i32> = sorted.iter().map(|b| b.entries).collect();
    diesel::sql_query(
        "INSERT INTO ingested_batches (batch_id, source, entries) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int4[]) \
         ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Text>, _>(sources)
    .bind::<Array<Integer>, _>(entries)
    .load::<BatchId>(conn)
    .await
    .map(|rows| rows.into_iter().map(|row| row.batch_id).collect())
}

/// Adds `rows` to the counts already stored for the same key and minute, saturating at the
/// largest bigint (an overflow would fail the transaction on every retry). The rows must
/// hold each (key, minute) once; sorted, so two workers lock rows in the same order and
/// never deadlock each other.
pub async fn add_usage(conn: &mut AsyncPgConnection, rows: &[UsageLogRow]) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut sorted: Vec<&UsageLogRow> = rows.iter().collect();
    sorted.sort_by_key(|row| (row.key_id, row.minute));
    diesel::sql_query(
        "INSERT INTO usage_logs (key_id, minute, allowed, denied, cost) \
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int8[], $4::int8[], $5::int8[]) \
         ON CONFLICT (key_id, minute) DO UPDATE SET \
           allowed = LEAST(usage_logs.allowed::numeric + EXCLUDED.allowed, 9223372036854775807)::int8, \
           denied = LEAST(usage_logs.denied::numeric + EXCLUDED.denied, 9223372036854775807)::int8, \
           cost = LEAST(usage_logs.cost::numeric + EXCLUDED.cost, 9223372036854775807)::int8",
    )
    .bind::<Array<SqlUuid>, _>(sorted.iter().map(|r| r.key_id).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(sorted.iter().map(|r| r.minute).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(sorted.iter().map(|r| r.allowed).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(sorted.iter().map(|r| r.denied).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(sorted.iter().map(|r| r.cost).collect::<Vec<_>>())
    .execute(conn)
    .await
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Integer)]
    count: i32,
}

/// Serialises partition changes until the end of the transaction, under a lock named after
/// the schema, so two workers creating or dropping the same day never collide.
async fn lock_partitions(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':keymeter-partitions'))",
    )
    .execute(conn)
    .await
    .map(drop)
}

/// Creates the daily partitions of `usage_logs` for `[first_day, first_day + days)` that are
/// missing; returns how many it created. Call it inside a transaction.
pub async fn ensure_partitions(
    conn: &mut AsyncPgConnection,
    first_day: NaiveDate,
    days: i32,
) -> QueryResult<i32> {
    lock_partitions(conn).await?;
    diesel::sql_query("SELECT usage_logs_ensure_partitions($1, $2) AS count")
        .bind::<Date, _>(first_day)
        .bind::<Integer, _>(days)
        .get_result::<Count>(conn)
        .await
        .map(|row| row.count)
}

/// Drops the daily partitions whose day is before `cutoff`; returns how many it dropped.
/// Call it inside a transaction.
pub async fn drop_partitions_before(
    conn: &mut AsyncPgConnection,
    cutoff: NaiveDate,
) -> QueryResult<i32> {
    lock_partitions(conn).await?;
    diesel::sql_query("SELECT usage_logs_drop_partitions_before($1) AS count")
        .bind::<Date, _>(cutoff)
        .get_result::<Count>(conn)
        .await
        .map(|row| row.count)
}

#[derive(QueryableByName)]
struct PartitionName {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The names of the existing daily partitions, oldest first.
pub async fn partitions(conn: &mut AsyncPgConnection) -> QueryResult<Vec<String>> {
    diesel::sql_query(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'usage_logs'::regclass ORDER BY c.relname",
    )
    .load::<PartitionName>(conn)
    .await
    .map(|rows| rows.into_iter().map(|row| row.name).collect())
}

/// Forgets the batch ids recorded before `before`; returns how many.
pub async fn prune_batches(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
) -> QueryResult<usize> {
    use crate::schema::ingested_batches::dsl::*;
    diesel::delete(ingested_batches.filter(ingested_at.lt(before)))
        .execute(conn)
        .await
}

/// The width of one bucket of a usage answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    fn sql_unit(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
}

/// Which keys a usage answer sums over.
#[derive(Debug, Clone, Copy)]
pub enum UsageScope<'a> {
    Key(Uuid),
    Owner(&'a str),
    Plan(Uuid),
}

/// One bucket: the counts of the minutes in `[start, start + granularity)`.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct UsageBucket {
    #[diesel(sql_type = Timestamptz)]
    pub start: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub allowed: i64,
    #[diesel(sql_type = BigInt)]
    pub denied: i64,
    #[diesel(sql_type = BigInt)]
    pub cost: i64,
}

/// The usage of the scope's keys over `[from, to)`, summed per bucket (UTC), oldest first;
/// buckets with no usage are left out. Reads the key's primary key index (key_id, minute),
/// and only the partitions of the days asked for.
///
/// Cancelled by PostgreSQL after `timeout`: a plan of many keys over a month can read a
/// lot, and an admin who asks too much should get an error, not hold a pooled connection
/// for minutes. The timeout holds for this transaction only.
pub async fn buckets(
    conn: &mut AsyncPgConnection,
    scope: UsageScope<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
    timeout: std::time::Duration,
) -> QueryResult<Vec<UsageBucket>> {
    // SET takes no bind parameters; the value is a number formatted here.
    let set_timeout = format!(
        "SET LOCAL statement_timeout = {}",
        timeout.as_millis().clamp(1, i32::MAX as u128)
    );
    let keys = match scope {
        UsageScope::Key(_) => "key_id = $4",
        UsageScope::Owner(_) => "key_id IN (SELECT id FROM api_keys WHERE owner_id = $4)",
        UsageScope::Plan(_) => "key_id IN (SELECT id FROM api_keys WHERE plan_id = $4)",
    };
    let sql = format!(
        "SELECT date_trunc($1, minute, 'UTC') AS start, sum(allowed)::int8 AS allowed, \
         sum(denied)::int8 AS denied, sum(cost)::int8 AS cost FROM usage_logs \
         WHERE minute >= $2 AND minute < $3 AND {keys} GROUP BY 1 ORDER BY 1"
    );
    conn.transaction(async |conn| {
        diesel::sql_query(set_timeout).execute(conn).await?;
        let query = diesel::sql_query(sql)
            .bind::<Text, _>(granularity.sql_unit())
            .bind::<Timestamptz, _>(from)
            .bind::<Timestamptz, _>(to);
        match scope {
            UsageScope::Key(id) | UsageScope::Plan(id) => {
                query.bind::<SqlUuid, _>(id).load(conn).await
            }
            UsageScope::Owner(owner) => query.bind::<Text, _>(owner).load(conn).await,
        }
    })
    .await
}

/// The cost counted per minute for one key over `[from, to)`, for the credits reconciliation.
pub async fn cost_by_minute(
    conn: &mut AsyncPgConnection,
    key_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> QueryResult<Vec<(DateTime<Utc>, i64)>> {
    use crate::schema::usage_logs::dsl as u;
    u::usage_logs
        .filter(u::key_id.eq(key_id))
        .filter(u::minute.ge(from))
        .filter(u::minute.lt(to))
        .select((u::minute, u::cost))
        .order(u::minute.asc())
        .load(conn)
        .await
}
