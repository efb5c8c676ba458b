//! Credits reconciliation: the credits the check script spent in Redis, minute by minute,
//! against the cost usage-ingest counted in Postgres for the same key and minute. They
//! differ while usage is on its way, so only settled minutes are compared; a difference
//! that remains is drift (a lost usage batch, a fail-open answer that spent nothing, a
//! hand-edited balance), reported as a metric and a log line per key.
//!
//! The first minute Redis recorded for a key is not compared: its credits may have been
//! set (or reset) within it, after requests Postgres counted. Minutes older than
//! `window` are pruned from Redis, also when the comparison is turned off: the script
//! records a minute per key with credits, 1 440 a day, whether anyone compares them or not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use storage::postgres::{PgPool, PostgresError};
use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisClusterError};
use storage::repositories::{api_keys, usage};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(transparent)]
    Redis(#[from] RedisClusterError),
}

impl From<diesel::result::Error> for ReconcileError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Postgres(error.into())
    }
}

/// One key whose credits and counted cost disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub key_id: Uuid,
    /// Credits spent in Redis over the compared minutes.
    pub spent: i64,
    /// Cost counted in Postgres over the same minutes.
    pub counted: i64,
    /// Sum over minutes of |spent − counted|.
    pub drift: i64,
}

pub struct Reconciler {
    pub pool: PgPool,
    pub redis: RedisCluster,
    pub layout: KeyLayout,
    /// Minutes younger than this are not compared yet.
    pub settle: Duration,
    /// Minutes older than this are neither compared nor kept.
    pub window: Duration,
    /// `false`: passes only prune.
    pub compare: bool,
}

fn minute_start(minute: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(minute.checked_mul(60)?, 0)
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Pass {
    pub drifts: Vec<Drift>,
    /// Keys the pass could not reconcile (a Redis or Postgres error); the others were.
    pub failed_keys: usize,
    pub first_error: Option<ReconcileError>,
}

impl Reconciler {
    /// One pass over every key with credits. A key that fails does not stop the pass: the
    /// keys after it are still pruned and compared.
    pub async fn run_once(&self) -> Result<Pass, ReconcileError> {
        let now_ms = Utc::now().timestamp_millis();
        let settled_end = (now_ms - self.settle.as_millis() as i64) / 60_000;
        let window_start = (now_ms - self.window.as_millis() as i64) / 60_000;
        let mut conn = self.pool.get().await.map_err(PostgresError::from)?;
        let keys = api_keys::ids_with_credits(&mut conn).await?;
        let mut pass = Pass::default();
        for key_id in keys {
            match self
                .reconcile_key(&mut conn, key_id, window_start, settled_end)
                .await
            {
                Ok(Some(drift)) => pass.drifts.push(drift),
                Ok(None) => {}
                Err(error) => {
                    pass.failed_keys += 1;
                    pass.first_error.get_or_insert(error);
                }
            }
        }
        Ok(pass)
    }

    /// Prunes one key's old minutes and, when comparing, its drift over the settled ones.
    async fn reconcile_key(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        key_id: Uuid,
        window_start: i64,
        settled_end: i64,
    ) -> Result<Option<Drift>, ReconcileError> {
        let spent: BTreeMap<i64, i64> =
            projection::credits_spent(&self.redis, &self.layout, key_id)
                .await?
                .into_iter()
                .collect();
        let expired: Vec<i64> = spent.range(..window_start).map(|(m, _)| *m).collect();
        projection::forget_credits_spent(&self.redis, &self.layout, key_id, &expired).await?;
        if !self.compare {
            return Ok(None);
        }
        let Some(first) = spent.keys().copied().find(|m| *m >= window_start) else {
            return Ok(None);
        };
        let (from, to) = (first + 1, settled_end);
        let (Some(from_at), Some(to_at)) = (minute_start(from), minute_start(to)) else {
            return Ok(None);
        };
        if from >= to {
            return Ok(None);
        }
        let mut minutes: BTreeMap<i64, (i64, i64)> =
            spent.range(from..to).map(|(m, s)| (*m, (*s, 0))).collect();
        for (at, cost) in usage::cost_by_minute(conn, key_id, from_at, to_at).await? {
            minutes.entry(at.timestamp() / 60).or_default().1 += cost;
        }
        let drift: i64 = minutes.values().map(|(s, c)| (s - c).abs()).sum();
        Ok((drift > 0).then(|| Drift {
            key_id,
            spent: minutes.values().map(|(s, _)| s).sum(),
            counted: minutes.values().map(|(_, c)| c).sum(),
            drift,
        }))
    }

    /// A pass every `interval` until `shutdown`, published as metrics.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.run_once().await {
                Ok(pass) => {
                    if let Some(error) = &pass.first_error {
                        tracing::warn!(%error, keys = pass.failed_keys,
                            "credits reconciliation skipped keys it could not read; trying them again next time");
                    }
                    let result = if pass.failed_keys > 0 {
                        "partial"
                    } else {
                        "ok"
                    };
                    // With the comparison off, nothing was compared: no drift to report.
                    if self.compare {
                        let total: i64 = pass.drifts.iter().map(|d| d.drift).sum();
                        metrics::gauge!("keymeter_credits_drift").set(total as f64);
                        metrics::gauge!("keymeter_credits_drifting_keys")
                            .set(pass.drifts.len() as f64);
                        metrics::counter!("keymeter_credits_reconciliations_total", "result" => result)
                            .increment(1);
                    }
                    for d in &pass.drifts {
                        tracing::warn!(key_id = %d.key_id, spent = d.spent, counted = d.counted,
                            drift = d.drift, "credits spent in Redis differ from the cost counted in Postgres");
                    }
                }
                Err(error) => {
                    metrics::counter!("keymeter_credits_reconciliations_total", "result" => "failed")
                        .increment(1);
                    tracing::warn!(%error, "credits reconciliation failed; trying again next time");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
