use chrono::{DateTime, Utc};
use domain::{Credits, KeyStatus, Limit};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::operations::keys::{KeyUpdate, KeyView, NewKeyInput};

/// An API key as the admin API shows it; the secret itself is never shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Key {
    pub id: Uuid,
    pub prefix: String,
    /// The first 8 characters of the secret, to tell keys apart.
    pub start: String,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    pub plan_id: Uuid,
    /// The limits the key runs under: its own when set, else its plan's.
    pub limits: Vec<Limit>,
    /// Whether `limits` are the key's own rather than its plan's.
    pub limits_overridden: bool,
    /// The credits configuration (the balance set at creation or last change; each check
    /// answers the live balance).
    pub credits: Option<Credits>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyView> for Key {
    fn from(view: KeyView) -> Self {
        let credits = view.credits();
        let row = view.row;
        Self {
            id: row.id,
            prefix: row.prefix,
            start: row.start,
            name: row.name,
            owner_id: row.owner_id,
            plan_id: row.plan_id,
            limits: view.limits,
            limits_overridden: row.limits.is_some(),
            credits,
            metadata: row.metadata,
            expires_at: row.expires_at,
            enabled: row.enabled,
            status: view.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            rotated_at: row.rotated_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// A key with its secret, answered once by create and rotate.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyWithSecret {
    /// The raw key. Store it now: keymeter keeps only a keyed hash.
    pub key: String,
    #[serde(flatten)]
    pub details: Key,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub plan_id: Uuid,
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Your customer's id, to list and sum usage by.
    #[schema(min_length = 1, max_length = 200)]
    pub owner_id: Option<String>,
    /// `[a-z][a-z0-9]{0,15}` segments joined by `_` (default `km`).
    #[schema(
        pattern = "^[a-z][a-z0-9]{0,15}(_[a-z][a-z0-9]{0,15})*$",
        max_length = 32
    )]
    pub prefix: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Replaces the plan's limits for this key.
    pub limits: Option<Vec<Limit>>,
    pub credits: Option<Credits>,
    /// A JSON object of at most 4 KiB, answered with every check.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// `false` creates the key disabled.
    pub enabled: Option<bool>,
}

impl From<CreateKey> for NewKeyInput {
    fn from(body: CreateKey) -> Self {
        Self {
            plan_id: body.plan_id,
            name: body.name,
            owner_id: body.owner_id,
            prefix: body.prefix,
            expires_at: body.expires_at,
            limits: body.limits,
            credits: body.credits,
            metadata: body.metadata,
            enabled: body.enabled,
        }
    }
}

/// Tells an absent field (leave it) from an explicit `null` (clear it).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Absent fields stay as they are; `null` clears name, owner_id, limits (back to the
/// plan's), credits and expires_at.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, min_length = 1, max_length = 200)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, min_length = 1, max_length = 200)]
    pub owner_id: Option<Option<String>>,
    pub plan_id: Option<Uuid>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<Limit>>, nullable)]
    pub limits: Option<Option<Vec<Limit>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Credits>, nullable)]
    pub credits: Option<Option<Credits>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub enabled: Option<bool>,
}

impl From<UpdateKey> for KeyUpdate {
    fn from(body: UpdateKey) -> Self {
        Self {
            name: body.name,
            owner_id: body.owner_id,
            plan_id: body.plan_id,
            limits: body.limits,
            credits: body.credits,
            metadata: body.metadata,
            expires_at: body.expires_at,
            enabled: body.enabled,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old secret keeps working, 0 to 604800000 (7 days); default 0.
    #[schema(maximum = 604_800_000)]
    pub grace_period_ms: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    #[param(pattern = "^[^\\u0000]*$")]
    pub owner_id: Option<String>,
    pub plan_id: Option<Uuid>,
    /// Deleted keys are listed only with `status=deleted`.
    pub status: Option<KeyStatus>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (empty means the first page).
    #[param(
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub cursor: Option<String>,
}
