//! Rows as diesel reads and writes them, one module per table group.

mod admin_token;
mod api_key;
mod audit;
mod outbox;
mod plan;
mod usage;

pub use admin_token::{AdminTokenRow, NewAdminToken};
pub use api_key::{ApiKeyRow, NewApiKey};
pub use audit::{AuditRow, NewAuditEntry};
pub use outbox::{NewOutboxMessage, OutboxRow};
pub use plan::{NewPlan, PlanRow};
pub use usage::{IngestedBatchRow, UsageLogRow};
