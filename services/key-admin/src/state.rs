use std::sync::Arc;

use domain::Pepper;
use storage::postgres::{PgConn, PgPool};
use storage::redis_cluster::{KeyLayout, RedisCluster};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::relay::Relay;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub redis: RedisCluster,
    pub layout: KeyLayout,
    pub pepper: Pepper,
    /// Wakes the outbox relay right after a change commits.
    pub relay_wakeup: Arc<Notify>,
    /// For an on-demand rebuild of the projection.
    pub relay: Arc<Relay>,
    /// How long PostgreSQL may spend on one usage analytics query.
    pub usage_query_timeout: std::time::Duration,
}

impl AppState {
    pub async fn conn(&self) -> Result<PgConn, ApiError> {
        Ok(self.pool.get().await?)
    }
}
