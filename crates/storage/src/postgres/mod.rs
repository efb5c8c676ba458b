//! PostgreSQL: the async pool and the embedded migrations.

mod migrations;
mod pool;

pub use migrations::{
    applied_migrations, embedded_migration_count, revert_all_migrations, run_pending_migrations,
};
pub use pool::{PgConn, PgPool, PostgresError, PostgresSettings, connect_pool, ping};

/// The span of one Postgres transaction, named after what it does (`keys::create`). Only
/// an OpenTelemetry exporter enables its target; without one, creating it costs nothing.
pub fn transaction_span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: crate::SPAN_TARGET,
        "postgres.transaction",
        otel.name = format!("postgres {operation}"),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = operation,
    )
}
