use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::models::AuditRow;
use storage::repositories::audit::{self, AuditFilter};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AuditRead, Authorized};
use crate::error::{ApiError, Problem};
use crate::pagination::{Page, finish, page_size};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The admin token id, `bootstrap`, or `cli`.
    pub actor: String,
    /// e.g. `key.create`, `plan.update`, `admin_token.delete`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// The changed fields, never a secret.
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            at: row.at,
            actor: row.actor,
            action: row.action,
            target_type: row.target_type,
            target_id: row.target_id,
            changes: row.changes,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[param(pattern = "^[^\\u0000]*$")]
    pub target_type: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub target_id: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub actor: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub action: Option<String>,
    /// Entries at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (empty means the first page).
    #[param(pattern = "^[0-9]*$")]
    pub cursor: Option<String>,
}

/// Every admin change, newest first.
#[utoipa::path(
    tag = "audit log",
    params(AuditQuery),
    responses(
        (status = 200, body = Page<AuditEntry>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["audit:read"]))
)]
#[get("/audit-log")]
pub async fn list_audit_log(
    _auth: Authorized<AuditRead>,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<Page<AuditEntry>>, ApiError> {
    let query = query.into_inner();
    let (limit, fetch) = page_size(query.limit)?;
    let before = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::field("cursor", "not a cursor of this list"))
        })
        .transpose()?;
    let filter = AuditFilter {
        target_type: query.target_type,
        target_id: query.target_id,
        actor: query.actor,
        action: query.action,
        from: query.from,
        to: query.to,
        before,
    };
    let mut conn = state.conn().await?;
    let rows = audit::list(&mut conn, &filter, fetch).await?;
    Ok(web::Json(finish(
        rows,
        limit,
        |r| r.id.to_string(),
        AuditEntry::from,
    )))
}
