use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::json::{GranularityParam, Usage};
use crate::auth::{Authorized, UsageRead};
use crate::error::{ApiError, Problem};
use crate::operations::usage;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyUsageQuery {
    /// Start (RFC 3339, inclusive); default: a day before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<DateTime<Utc>>,
    /// `minute`, `hour` (default) or `day`; at most 44,640 buckets per answer.
    pub granularity: Option<GranularityParam>,
}

/// One key's usage over time, from the counts usage-ingest stored.
#[utoipa::path(
    tag = "usage",
    params(("id" = Uuid, Path, description = "Key id"), KeyUsageQuery),
    responses(
        (status = 200, body = Usage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["usage:read"]))
)]
#[get("/keys/{id}/usage")]
pub async fn key_usage(
    _auth: Authorized<UsageRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    query: web::Query<KeyUsageQuery>,
) -> Result<web::Json<Usage>, ApiError> {
    let query = query.into_inner();
    let granularity = query.granularity.unwrap_or_default();
    let (from, to) = usage::range(query.from, query.to, granularity.into())?;
    let buckets = usage::of_key(&state, *id, from, to, granularity.into()).await?;
    Ok(web::Json(Usage {
        key_id: Some(*id),
        owner_id: None,
        plan_id: None,
        granularity,
        from,
        to,
        buckets: buckets.into_iter().map(Into::into).collect(),
    }))
}
