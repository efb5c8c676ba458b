//! The Postgres side of ingest: several batches in one transaction, each batch id recorded
//! with its counts, so a batch is counted once whatever RabbitMQ redelivers.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;
use tracing::Instrument;

use chrono::{DateTime, NaiveDate, Utc};
use diesel_async::AsyncConnection;
use domain::UsageBatch;
use storage::models::UsageLogRow;
use storage::postgres::{PgPool, PostgresError};
use storage::repositories::usage::{self, BatchReceipt};
use uuid::Uuid;

/// What one transaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Batches counted now.
    pub batches: usize,
    /// Their entries.
    pub entries: usize,
    /// Batches recorded before (redeliveries), or repeated within this call: not counted.
    pub duplicates: usize,
}

pub struct Writer {
    pool: PgPool,
    /// Days whose partition is known to exist, so a transaction does not ask each time.
    partitioned_days: Mutex<HashSet<NaiveDate>>,
}

impl Writer {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            partitioned_days: Mutex::new(HashSet::new()),
        }
    }

    /// Counts the batches not counted before, in one transaction. On error nothing is
    /// written and the caller must not ack; calling again with the same batches is safe.
    pub async fn write(&self, batches: &[&UsageBatch]) -> Result<Written, PostgresError> {
        let mut unique: Vec<&UsageBatch> = Vec::with_capacity(batches.len());
        let mut seen = HashSet::with_capacity(batches.len());
        for batch in batches {
            if seen.insert(batch.batch_id) {
                unique.push(batch);
            }
        }
        let repeated_here = batches.len() - unique.len();
        self.ensure_partitions(&unique).await?;

        let receipts: Vec<BatchReceipt> = unique
            .iter()
            .map(|b| BatchReceipt {
                batch_id: b.batch_id,
                source: b.source.clone(),
                entries: i32::try_from(b.entries.len()).unwrap_or(i32::MAX),
            })
            .collect();
        let started = Instant::now();
        let mut conn = self.pool.get().await?;
        let result = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let new_ids: HashSet<Uuid> = usage::record_new_batches(conn, &receipts)
                    .await?
                    .into_iter()
                    .collect();
                let fresh: Vec<&UsageBatch> = unique
                    .iter()
                    .copied()
                    .filter(|b| new_ids.contains(&b.batch_id))
                    .collect();
                let rows = sum_by_key_and_minute(&fresh);
                usage::add_usage(conn, &rows).await?;
                Ok(Written {
                    batches: fresh.len(),
                    entries: fresh.iter().map(|b| b.entries.len()).sum(),
                    duplicates: unique.len() - fresh.len(),
                })
            })
            .instrument(storage::postgres::transaction_span("writer::write"))
            .await;
        metrics::histogram!("keymeter_ingest_transaction_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(mut written) => {
                written.duplicates += repeated_here;
                Ok(written)
            }
            Err(error) => {
                if is_missing_partition(&error) {
                    // Retention dropped a day this process thought was there.
                    if let Ok(mut days) = self.partitioned_days.lock() {
                        days.clear();
                    }
                }
                Err(error.into())
            }
        }
    }

    /// Creates the partitions of the days these batches fall on, once per day per process.
    async fn ensure_partitions(&self, batches: &[&UsageBatch]) -> Result<(), PostgresError> {
        let days: HashSet<NaiveDate> = batches
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| e.minute.date_naive()))
            .collect();
        let missing: Vec<NaiveDate> = match self.partitioned_days.lock() {
            Ok(known) => days.into_iter().filter(|d| !known.contains(d)).collect(),
            Err(_) => days.into_iter().collect(),
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        for day in &missing {
            let day = *day;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                usage::ensure_partitions(conn, day, 1).await
            })
            .instrument(storage::postgres::transaction_span(
                "writer::ensure_partitions",
            ))
            .await?;
        }
        if let Ok(mut known) = self.partitioned_days.lock() {
            known.extend(missing);
        }
        Ok(())
    }
}

/// One row per (key, minute): limiters send the same key and minute in separate batches,
/// and one INSERT may not touch a row twice.
fn sum_by_key_and_minute(batches: &[&UsageBatch]) -> Vec<UsageLogRow> {
    let mut sums: HashMap<(Uuid, DateTime<Utc>), UsageLogRow> = HashMap::new();
    for entry in batches.iter().flat_map(|b| b.entries.iter()) {
        let row = sums
            .entry((entry.key_id, entry.minute))
            .or_insert_with(|| UsageLogRow {
                key_id: entry.key_id,
                minute: entry.minute,
                allowed: 0,
                denied: 0,
                cost: 0,
            });
        // Saturating, as Postgres adds them (see usage::add_usage).
        row.allowed = row.allowed.saturating_add(as_i64(entry.allowed));
        row.denied = row.denied.saturating_add(as_i64(entry.denied));
        row.cost = row.cost.saturating_add(as_i64(entry.cost));
    }
    sums.into_values().collect()
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn is_missing_partition(error: &diesel::result::Error) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(_, info) if info.message().contains("no partition")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::UsageEntry;
    use domain::events::V1;

    fn entry(key: u128, minute: i64, allowed: u64, denied: u64, cost: u64) -> UsageEntry {
        UsageEntry {
            key_id: Uuid::from_u128(key),
            minute: DateTime::from_timestamp(minute * 60, 0).unwrap_or_default(),
            allowed,
            denied,
            cost,
        }
    }

    #[test]
    fn sums_the_same_key_and_minute_across_batches() {
        let a = UsageBatch {
            v: V1,
            batch_id: Uuid::from_u128(1),
            source: "a".into(),
            entries: vec![entry(1, 10, 2, 1, 4), entry(2, 10, 1, 0, 1)],
        };
        let b = UsageBatch {
            v: V1,
            batch_id: Uuid::from_u128(2),
            source: "b".into(),
            entries: vec![entry(1, 10, 3, 2, 6), entry(1, 11, 1, 0, 1)],
        };
        let mut rows = sum_by_key_and_minute(&[&a, &b]);
        rows.sort_by_key(|r| (r.key_id, r.minute));
        let counts: Vec<(u128, i64, i64, i64)> = rows
            .iter()
            .map(|r| (r.key_id.as_u128(), r.allowed, r.denied, r.cost))
            .collect();
        assert_eq!(counts, vec![(1, 5, 3, 10), (1, 1, 0, 1), (2, 1, 0, 1)]);
    }
}
