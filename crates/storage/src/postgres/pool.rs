use std::time::Duration;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::{BuildError, Object, Pool, PoolError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

pub type PgPool = Pool<AsyncPgConnection>;
pub type PgConn = Object<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("postgres is unavailable: {0}")]
    Unavailable(#[from] PoolError),
    #[error("postgres pool: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("postgres connection: {0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("migrations: {0}")]
    Migration(String),
}

/// Where PostgreSQL is and how many connections one process may hold.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub url: String,
    pub max_connections: usize,
    /// How long a request waits for a free connection before answering 503.
    pub acquire_timeout: Duration,
}

impl PostgresSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds the pool; connections open lazily, so this succeeds while Postgres is down and
/// `/readyz` says so.
pub fn connect_pool(settings: &PostgresSettings) -> Result<PgPool, PostgresError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(settings.url.clone());
    let pool = Pool::builder(manager)
        .max_size(settings.max_connections)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.acquire_timeout))
        .recycle_timeout(Some(settings.acquire_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?;
    Ok(pool)
}

/// One round trip, for readiness.
pub async fn ping(pool: &PgPool) -> Result<(), PostgresError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}
