//! Partition and dedup upkeep, run at start and then periodically: daily partitions of
//! `usage_logs` exist `days_ahead` days ahead, those older than `retention_days` are dropped,
//! and batch ids older than the dedup window are forgotten.

use std::time::Duration;
use tracing::Instrument;

use chrono::{DateTime, NaiveDate, Utc};
use diesel_async::AsyncConnection;
use storage::postgres::{PgPool, PostgresError};
use storage::repositories::usage;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct UpkeepSettings {
    pub days_ahead: u32,
    pub retention_days: u32,
    pub dedup_window: Duration,
    pub interval: Duration,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpkeepReport {
    pub created: i32,
    pub dropped: i32,
    pub forgotten_batches: usize,
}

/// One round, for `today`.
pub async fn run_once(
    pool: &PgPool,
    settings: &UpkeepSettings,
    today: NaiveDate,
) -> Result<UpkeepReport, PostgresError> {
    let mut conn = pool.get().await?;
    // Yesterday too: a limiter flushing just after midnight still writes to it.
    let first = today - chrono::Days::new(1);
    let days = i32::try_from(settings.days_ahead.saturating_add(2)).unwrap_or(i32::MAX);
    let cutoff = today - chrono::Days::new(u64::from(settings.retention_days));
    // Batch ids are judged too old by their maker's clock (a limiter's) and forgotten by this
    // host's: the margin (the window itself, at most a day) keeps a limiter whose clock runs
    // ahead from getting a batch counted twice near the end of the window.
    let window = chrono::Duration::from_std(settings.dedup_window).unwrap_or(chrono::Duration::MAX);
    let margin = window.min(chrono::Duration::days(1));
    let forget_before = Utc::now()
        .checked_sub_signed(window)
        .and_then(|at| at.checked_sub_signed(margin))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let report = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let created = usage::ensure_partitions(conn, first, days).await?;
            let dropped = usage::drop_partitions_before(conn, cutoff).await?;
            Ok(UpkeepReport {
                created,
                dropped,
                forgotten_batches: 0,
            })
        })
        .instrument(storage::postgres::transaction_span("upkeep::run_once"))
        .await?;
    let forgotten_batches = usage::prune_batches(&mut conn, forget_before).await?;
    Ok(UpkeepReport {
        forgotten_batches,
        ..report
    })
}

/// Runs a round every `interval` until `shutdown`; a failed round is retried after a minute.
pub async fn run(pool: PgPool, settings: UpkeepSettings, shutdown: CancellationToken) {
    loop {
        let wait = match run_once(&pool, &settings, Utc::now().date_naive()).await {
            Ok(report) => {
                tracing::info!(
                    created = report.created,
                    dropped = report.dropped,
                    forgotten_batches = report.forgotten_batches,
                    "usage partitions kept"
                );
                settings.interval
            }
            Err(error) => {
                tracing::warn!(%error, "partition upkeep failed; retrying in a minute");
                Duration::from_secs(60).min(settings.interval)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
