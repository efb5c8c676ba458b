//! Every admin change, each in one transaction with its audit entry and, where the Redis
//! projection must follow, its outbox row. Reads live here too, so handlers stay thin.

pub mod admin_tokens;
pub mod keys;
pub mod plans;
pub mod usage;

use diesel_async::AsyncPgConnection;
use storage::models::{NewAuditEntry, NewOutboxMessage};
use storage::repositories::{audit, outbox};
use uuid::Uuid;

pub(crate) async fn record_audit(
    conn: &mut AsyncPgConnection,
    actor: &str,
    action: &str,
    target_type: &str,
    target_id: String,
    changes: serde_json::Value,
) -> diesel::QueryResult<()> {
    audit::record(
        conn,
        &NewAuditEntry {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target_type: target_type.to_owned(),
            target_id,
            changes,
        },
    )
    .await
}

pub(crate) async fn enqueue(
    conn: &mut AsyncPgConnection,
    aggregate: &str,
    aggregate_id: Uuid,
    change: &str,
    payload: serde_json::Value,
) -> diesel::QueryResult<()> {
    outbox::enqueue(
        conn,
        &NewOutboxMessage {
            aggregate: aggregate.to_owned(),
            aggregate_id,
            change: change.to_owned(),
            payload,
        },
    )
    .await
}
