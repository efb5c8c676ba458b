use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::schema::plans;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = plans, check_for_backend(diesel::pg::Pg))]
pub struct PlanRow {
    pub id: Uuid,
    pub name: String,
    pub limits: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = plans)]
pub struct NewPlan {
    pub id: Uuid,
    pub name: String,
    pub limits: serde_json::Value,
}
