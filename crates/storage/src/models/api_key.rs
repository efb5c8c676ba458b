use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::api_keys;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub plan_id: Uuid,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    pub prefix: String,
    pub start: String,
    pub key_hash: String,
    pub previous_key_hash: Option<String>,
    pub previous_key_expires_at: Option<DateTime<Utc>>,
    pub limits: Option<serde_json::Value>,
    pub credits: Option<serde_json::Value>,
    pub metadata: serde_json::Value,
    pub enabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A new key: only the keyed hash of its secret and the first characters for display.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewApiKey {
    pub id: Uuid,
    pub plan_id: Uuid,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    pub prefix: String,
    pub start: String,
    pub key_hash: String,
    pub limits: Option<serde_json::Value>,
    pub credits: Option<serde_json::Value>,
    pub metadata: serde_json::Value,
    pub enabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
}
