use chrono::{DateTime, Utc};
use domain::Limit;
use serde::{Deserialize, Serialize};
use storage::models::PlanRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::operations::plans::limits_of;

#[derive(Debug, Serialize, ToSchema)]
pub struct Plan {
    pub id: Uuid,
    pub name: String,
    pub limits: Vec<Limit>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PlanRow> for Plan {
    fn from(row: PlanRow) -> Self {
        Self {
            limits: limits_of(&row),
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    /// Unique among plans, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(default)]
    pub limits: Vec<Limit>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Replaces every limit; keys on the plan follow within a second.
    pub limits: Option<Vec<Limit>>,
}
