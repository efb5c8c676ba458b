use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::{ingested_batches, usage_logs};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = usage_logs, check_for_backend(diesel::pg::Pg))]
pub struct UsageLogRow {
    pub key_id: Uuid,
    pub minute: DateTime<Utc>,
    pub allowed: i64,
    pub denied: i64,
    pub cost: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ingested_batches, check_for_backend(diesel::pg::Pg))]
pub struct IngestedBatchRow {
    pub batch_id: Uuid,
    pub source: String,
    pub entries: i32,
    pub ingested_at: DateTime<Utc>,
}
