use diesel::Connection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::PostgresError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

type SyncWrapper = AsyncConnectionWrapper<AsyncPgConnection>;

/// Diesel's migration harness is synchronous: run it on a blocking thread over the async
/// connection, so any tokio runtime flavour works.
async fn with_harness<T, F>(url: &str, work: F) -> Result<T, PostgresError>
where
    T: Send + 'static,
    F: FnOnce(&mut SyncWrapper) -> Result<T, PostgresError> + Send + 'static,
{
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = SyncWrapper::establish(&url)?;
        work(&mut conn)
    })
    .await
    .map_err(|e| PostgresError::Migration(format!("migration task failed: {e}")))?
}

/// Applies every migration not applied yet; returns the versions it applied.
pub async fn run_pending_migrations(url: &str) -> Result<Vec<String>, PostgresError> {
    with_harness(url, |conn| {
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| PostgresError::Migration(e.to_string()))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Reverts every applied migration, newest first; returns the versions it reverted.
pub async fn revert_all_migrations(url: &str) -> Result<Vec<String>, PostgresError> {
    with_harness(url, |conn| {
        let reverted = conn
            .revert_all_migrations(MIGRATIONS)
            .map_err(|e| PostgresError::Migration(e.to_string()))?;
        Ok(reverted.iter().map(ToString::to_string).collect())
    })
    .await
}

/// The versions applied so far, oldest first.
pub async fn applied_migrations(url: &str) -> Result<Vec<String>, PostgresError> {
    with_harness(url, |conn| {
        let mut applied: Vec<String> = conn
            .applied_migrations()
            .map_err(|e| PostgresError::Migration(e.to_string()))?
            .iter()
            .map(ToString::to_string)
            .collect();
        applied.sort();
        Ok(applied)
    })
    .await
}

/// How many migrations this build carries.
pub fn embedded_migration_count() -> Result<usize, PostgresError> {
    MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map(|m| m.len())
        .map_err(|e| PostgresError::Migration(e.to_string()))
}
