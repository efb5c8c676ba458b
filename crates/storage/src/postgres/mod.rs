//! PostgreSQL: the async pool and the embedded migrations.

mod migrations;
mod pool;

pub use migrations::{
    applied_migrations, embedded_migration_count, revert_all_migrations, run_pending_migrations,
};
pub use pool::{PgConn, PgPool, PostgresError, PostgresSettings, connect_pool, ping};
