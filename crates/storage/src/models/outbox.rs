use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::outbox;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub aggregate: String,
    pub aggregate_id: Uuid,
    pub change: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub projected_at: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox)]
pub struct NewOutboxMessage {
    pub aggregate: String,
    pub aggregate_id: Uuid,
    pub change: String,
    pub payload: serde_json::Value,
}
