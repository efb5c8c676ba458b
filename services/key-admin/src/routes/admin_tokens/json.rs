use chrono::{DateTime, Utc};
use domain::Scope;
use serde::{Deserialize, Serialize};
use storage::models::AdminTokenRow;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminToken {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<AdminTokenRow> for AdminToken {
    fn from(row: AdminTokenRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            scopes: row.scopes.iter().filter_map(|s| s.parse().ok()).collect(),
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

/// An admin token with its secret, answered once.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminTokenWithSecret {
    /// The raw token; only its hash is kept.
    pub token: String,
    #[serde(flatten)]
    pub details: AdminToken,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminToken {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
}
