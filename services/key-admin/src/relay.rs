//! The outbox relay: applies committed changes to the Redis projection, then publishes their
//! key events, each in the order they were written. It also rebuilds the whole projection
//! when Redis has lost some of it (a record group without its epoch marker) or when asked
//! to (`POST /v1/ops/resync`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain::events::V1;
use domain::{CreditsConfig, KeyChange, KeyEvent, KeyRecord};
use futures_util::TryStreamExt;
use storage::models::{ApiKeyRow, OutboxRow, PlanRow};
use storage::postgres::PgPool;
use storage::rabbitmq::{AmqpError, RabbitLink};
use storage::redis_cluster::projection::{self, KeyLayout};
use storage::redis_cluster::{RedisCluster, RedisClusterError};
use storage::repositories::{api_keys, outbox, plans};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::operations::keys::{credits_of, effective_limits};

const BATCH: i64 = 100;
const PAGE: i64 = 500;
/// Keys of one page projected at once: their Redis writes are independent of each other,
/// and one at a time a plan of 10 000 keys held the relay (and every revocation behind it)
/// for 5 s.
const PROJECT_CONCURRENCY: usize = 32;
/// Key events of one outbox row waiting for their broker confirms at once.
const PUBLISH_CONCURRENCY: usize = 64;
/// Rows deleted per statement when old outbox rows are pruned.
const PRUNE_CHUNK: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Postgres(#[from] diesel::result::Error),
    #[error(transparent)]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    #[error(transparent)]
    Redis(#[from] RedisClusterError),
    #[error(transparent)]
    Rabbit(#[from] AmqpError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ResyncCounts {
    pub keys: u64,
    pub plans: u64,
}

/// What one relay pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassOutcome {
    pub projected: usize,
    pub published: usize,
}

pub struct Relay {
    pool: PgPool,
    redis: RedisCluster,
    layout: KeyLayout,
    rabbit: Arc<RabbitLink>,
    wakeup: Arc<Notify>,
    pub poll_interval: Duration,
    pub epoch_check_interval: Duration,
    /// How long a row stays in the outbox after its event went out; `None` keeps them all.
    pub outbox_retention: Option<Duration>,
    pub prune_interval: Duration,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        redis: RedisCluster,
        layout: KeyLayout,
        rabbit: Arc<RabbitLink>,
        wakeup: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            redis,
            layout,
            rabbit,
            wakeup,
            poll_interval: Duration::from_millis(250),
            epoch_check_interval: Duration::from_secs(2),
            outbox_retention: None,
            prune_interval: Duration::from_secs(3600),
        }
    }

    /// Relays until `shutdown`, finishing the step in hand first.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_epoch_check: Option<Instant> = None;
        let mut backoff = self.poll_interval;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
            if last_epoch_check.is_none_or(|at| at.elapsed() >= self.epoch_check_interval) {
                last_epoch_check = Some(Instant::now());
                if let Err(error) = self.rebuild_if_lost().await {
                    tracing::warn!(%error, "could not check the projection epoch");
                }
            }
            match self.drain().await {
                Ok(_) => backoff = self.poll_interval,
                Err(error) => {
                    tracing::warn!(%error, "outbox relay step failed; will retry");
                    metrics::counter!("keymeter_outbox_failures_total").increment(1);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Prunes the outbox at start and then every `prune_interval` until `shutdown`. A task
    /// of its own: the first prune of a long-grown table must not hold up the relay.
    pub async fn run_pruning(self: Arc<Self>, shutdown: CancellationToken) {
        if self.outbox_retention.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                pruned = self.prune_outbox() => {
                    if let Err(error) = pruned {
                        tracing::warn!(%error, "could not prune the outbox; trying again later");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.prune_interval) => {}
            }
        }
    }

    /// Deletes the rows whose event went out longer than the retention ago, a chunk at a
    /// time; returns how many. Rows not relayed yet are never touched.
    pub async fn prune_outbox(&self) -> Result<usize, RelayError> {
        let Some(retention) = self.outbox_retention else {
            return Ok(0);
        };
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|retention| chrono::Utc::now().checked_sub_signed(retention));
        let Some(cutoff) = cutoff else {
            return Ok(0);
        };
        let mut conn = self.pool.get().await?;
        let mut pruned = 0;
        loop {
            let deleted = outbox::delete_processed_before(&mut conn, cutoff, PRUNE_CHUNK).await?;
            pruned += deleted;
            metrics::counter!("keymeter_outbox_pruned_total").increment(deleted as u64);
            if deleted < PRUNE_CHUNK as usize {
                return Ok(pruned);
            }
        }
    }

    /// Relays until nothing is pending (or a step fails).
    pub async fn drain(&self) -> Result<PassOutcome, RelayError> {
        let mut total = PassOutcome::default();
        loop {
            let pass = self.pass().await?;
            total.projected += pass.projected;
            total.published += pass.published;
            if pass == PassOutcome::default() {
                return Ok(total);
            }
        }
    }

    /// One batch: project what is not projected, then publish what is projected. Rows done
    /// are marked in the same transaction that holds the relay lock; a failure stops the
    /// batch at that row, so order holds, and the row is tried again next time.
    pub async fn pass(&self) -> Result<PassOutcome, RelayError> {
        let mut conn = self.pool.get().await?;
        let (outcome, failure) = conn
            .transaction(async |conn| {
                if !outbox::try_lock_relay(conn).await? {
                    return Ok::<_, RelayError>((PassOutcome::default(), None));
                }
                let mut outcome = PassOutcome::default();
                let mut failure = None;

                let rows = outbox::unprojected(conn, BATCH).await?;
                let mut done = Vec::new();
                for row in &rows {
                    match self.project(conn, row).await {
                        Ok(()) => done.push(row.id),
                        Err(error) => {
                            failure = Some((row.id, error));
                            break;
                        }
                    }
                }
                outbox::mark_projected(conn, &done).await?;
                outcome.projected = done.len();

                if failure.is_none() {
                    let rows = outbox::unpublished(conn, BATCH).await?;
                    let mut done = Vec::new();
                    for row in &rows {
                        match self.publish(conn, row).await {
                            Ok(()) => done.push(row.id),
                            Err(error) => {
                                failure = Some((row.id, error));
                                break;
                            }
                        }
                    }
                    outbox::mark_processed(conn, &done).await?;
                    outcome.published = done.len();
                }
                if let Some((id, error)) = &failure {
                    outbox::record_failure(conn, *id, &error.to_string()).await?;
                }
                Ok((outcome, failure))
            })
            .instrument(storage::postgres::transaction_span("relay::pass"))
            .await?;
        metrics::counter!("keymeter_outbox_projected_total").increment(outcome.projected as u64);
        metrics::counter!("keymeter_outbox_published_total").increment(outcome.published as u64);
        match failure {
            Some((_, error)) => Err(error),
            None => Ok(outcome),
        }
    }

    async fn project(
        &self,
        conn: &mut AsyncPgConnection,
        row: &OutboxRow,
    ) -> Result<(), RelayError> {
        match row.aggregate.as_str() {
            "key" => {
                let reset =
                    row.payload.get("reset_credits").and_then(|v| v.as_bool()) == Some(true);
                if let Some(key) = api_keys::get_any(conn, row.aggregate_id).await? {
                    self.project_key(conn, &key, reset).await?;
                }
                // Secrets a rotation retired go after the new one is in place, so there is
                // no moment with neither (the new secret is never among them).
                for hash in string_list(&row.payload, "remove_hashes") {
                    projection::remove_records(&self.redis, &self.layout, &[hash.as_str()]).await?;
                }
            }
            "plan" => {
                let mut plans = HashMap::new();
                let mut after = None;
                loop {
                    let keys = api_keys::live_on_plan(conn, row.aggregate_id, after, PAGE).await?;
                    self.project_keys(conn, &keys, &mut plans).await?;
                    match keys.last() {
                        Some(last) if keys.len() as i64 == PAGE => after = Some(last.id),
                        _ => break,
                    }
                }
            }
            other => tracing::warn!(
                aggregate = other,
                id = row.id,
                "unknown outbox aggregate skipped"
            ),
        }
        Ok(())
    }

    /// Writes one key's record (or removes it when the key is deleted).
    async fn project_key(
        &self,
        conn: &mut AsyncPgConnection,
        key: &ApiKeyRow,
        reset_credits: bool,
    ) -> Result<(), RelayError> {
        let plan = match key.deleted_at {
            Some(_) => None,
            None => plans::get_any(conn, key.plan_id).await?,
        };
        self.project_key_on(key, plan.as_ref(), reset_credits).await
    }

    /// Projects a page of keys, several at once, each plan read from Postgres once (`plans`
    /// remembers them across pages).
    async fn project_keys(
        &self,
        conn: &mut AsyncPgConnection,
        keys: &[ApiKeyRow],
        plans: &mut HashMap<Uuid, Option<PlanRow>>,
    ) -> Result<(), RelayError> {
        for key in keys {
            if key.deleted_at.is_none() && !plans.contains_key(&key.plan_id) {
                plans.insert(key.plan_id, plans::get_any(conn, key.plan_id).await?);
            }
        }
        let plans = &*plans;
        futures_util::stream::iter(keys.iter().map(Ok))
            .try_for_each_concurrent(PROJECT_CONCURRENCY, |key| {
                let plan = plans.get(&key.plan_id).and_then(Option::as_ref);
                self.project_key_on(key, plan, false)
            })
            .await
    }

    /// Writes one key to Redis (or removes it, if deleted) with the plan it is on.
    async fn project_key_on(
        &self,
        key: &ApiKeyRow,
        plan: Option<&PlanRow>,
        reset_credits: bool,
    ) -> Result<(), RelayError> {
        let hashes: Vec<&str> = std::iter::once(key.key_hash.as_str())
            .chain(key.previous_key_hash.as_deref())
            .collect();
        if key.deleted_at.is_some() {
            projection::remove_records(&self.redis, &self.layout, &hashes).await?;
            projection::remove_credits(&self.redis, &self.layout, key.id).await?;
            return Ok(());
        }
        let Some(plan) = plan else {
            tracing::error!(key_id = %key.id, "key without a plan left out of the projection");
            return Ok(());
        };
        let credits = credits_of(key);
        let record = KeyRecord {
            v: V1,
            key_id: key.id,
            plan_id: key.plan_id,
            owner_id: key.owner_id.clone(),
            enabled: key.enabled,
            revoked: key.revoked_at.is_some(),
            expires_at: key.expires_at,
            limits: effective_limits(key, plan),
            credits: credits.as_ref().map(|c| CreditsConfig {
                refill: c.refill.clone(),
            }),
            metadata: key.metadata.clone(),
        };
        let previous = key
            .previous_key_hash
            .as_deref()
            .zip(key.previous_key_expires_at);
        // The balance before the record that says the key has one: a check in between would
        // otherwise find credits configured and none to spend.
        if let Some(c) = &credits {
            if reset_credits {
                projection::reset_credits(&self.redis, &self.layout, key.id, c.remaining).await?
            } else {
                projection::init_credits_if_absent(&self.redis, &self.layout, key.id, c.remaining)
                    .await?
            }
        }
        projection::put_key(&self.redis, &self.layout, &record, &key.key_hash, previous).await?;
        if credits.is_none() {
            projection::remove_credits(&self.redis, &self.layout, key.id).await?;
        }
        Ok(())
    }

    async fn publish(
        &self,
        conn: &mut AsyncPgConnection,
        row: &OutboxRow,
    ) -> Result<(), RelayError> {
        let change = match row.change.as_str() {
            "revoked" => KeyChange::Revoked,
            "deleted" => KeyChange::Deleted,
            "rotated" => KeyChange::Rotated,
            "plan_updated" => KeyChange::PlanUpdated,
            _ => KeyChange::Updated,
        };
        let key_ids: Vec<Uuid> = if row.aggregate == "plan" {
            let mut ids = Vec::new();
            let mut after = None;
            loop {
                let keys = api_keys::live_on_plan(conn, row.aggregate_id, after, PAGE).await?;
                ids.extend(keys.iter().map(|k| k.id));
                match keys.last() {
                    Some(last) if keys.len() as i64 == PAGE => after = Some(last.id),
                    _ => break,
                }
            }
            ids
        } else {
            vec![row.aggregate_id]
        };
        // A plan's events are for different keys, so their order does not matter; each
        // waits for its broker confirm, and one after another 10 000 of them held the relay
        // (and every change behind them) for seconds.
        futures_util::stream::iter(key_ids.into_iter().map(Ok))
            .try_for_each_concurrent(PUBLISH_CONCURRENCY, |key_id| async move {
                let event = KeyEvent::new(key_id, change);
                let body = serde_json::to_vec(&event).unwrap_or_default();
                self.broadcast(&body).await
            })
            .await
    }

    async fn broadcast(&self, body: &[u8]) -> Result<(), RelayError> {
        let publisher = self.rabbit.publisher().await?;
        let exchange = self.rabbit.topology().keys_exchange();
        if let Err(error) = publisher.broadcast(&exchange, body).await {
            self.rabbit.forget_publisher().await;
            return Err(error.into());
        }
        Ok(())
    }

    /// Rebuilds the projection when a record group's marker is gone: the Redis shard that
    /// held it lost its data (restarted empty, flushed), and the group's records with it.
    pub async fn rebuild_if_lost(&self) -> Result<Option<ResyncCounts>, RelayError> {
        if self.groups_lost().await?.is_empty() {
            return Ok(None);
        }
        let mut conn = self.pool.get().await?;
        conn.transaction(async |conn| {
            outbox::lock_relay(conn).await?;
            // Another key-admin may have rebuilt it while this one waited for the lock.
            let lost = self.groups_lost().await?;
            if lost.is_empty() {
                return Ok(None);
            }
            tracing::warn!(
                groups = lost.len(),
                of = projection::RECORD_GROUPS,
                "record groups of the Redis projection have no epoch marker: rebuilding it from Postgres"
            );
            metrics::counter!("keymeter_projection_rebuilds_total", "reason" => "lost")
                .increment(1);
            self.rebuild(conn).await.map(Some)
        })
        .await
    }

    async fn groups_lost(&self) -> Result<Vec<String>, RelayError> {
        Ok(projection::groups_without_marker(&self.redis, &self.layout).await?)
    }

    /// Writes every key and plan from Postgres into Redis, then a new epoch marker in every
    /// record group that kept its data meanwhile (`projection::finish_rebuild`). Credit
    /// balances that Redis still holds are kept; missing ones start from the configuration.
    /// Holds the relay lock throughout (`outbox::lock_relay`).
    pub async fn resync(&self) -> Result<ResyncCounts, RelayError> {
        let mut conn = self.pool.get().await?;
        conn.transaction(async |conn| {
            outbox::lock_relay(conn).await?;
            self.rebuild(conn).await
        })
        .await
    }

    async fn rebuild(&self, conn: &mut AsyncPgConnection) -> Result<ResyncCounts, RelayError> {
        let epoch = Uuid::now_v7().to_string();
        projection::begin_rebuild(&self.redis, &self.layout, &epoch).await?;
        let live_plans = plans::all(conn).await?;
        let plans_count = live_plans.len() as u64;
        let mut keys_count = 0;
        // Keys on a deleted plan (none should be live) still get theirs from `project_keys`.
        let mut plans: HashMap<Uuid, Option<PlanRow>> = live_plans
            .into_iter()
            .map(|plan| (plan.id, Some(plan)))
            .collect();
        let mut after = None;
        loop {
            let keys = api_keys::all_page(conn, after, PAGE).await?;
            self.project_keys(conn, &keys, &mut plans).await?;
            keys_count += keys.iter().filter(|key| key.deleted_at.is_none()).count() as u64;
            match keys.last() {
                Some(last) if keys.len() as i64 == PAGE => after = Some(last.id),
                _ => break,
            }
        }
        let unmarked = projection::finish_rebuild(&self.redis, &self.layout, &epoch).await?;
        if !unmarked.is_empty() {
            tracing::warn!(
                groups = unmarked.len(),
                "record groups lost their data during the rebuild: left unmarked, to be rebuilt again"
            );
        }
        Ok(ResyncCounts {
            keys: keys_count,
            plans: plans_count,
        })
    }
}

fn string_list(payload: &serde_json::Value, field: &str) -> Vec<String> {
    payload
        .get(field)
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
