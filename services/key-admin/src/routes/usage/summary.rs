use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use storage::repositories::usage::UsageScope;
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
pub struct UsageQuery {
    /// Sum over the keys of this owner (give this or `plan_id`).
    #[param(pattern = "^[^\\u0000]*$")]
    pub owner_id: Option<String>,
    /// Sum over the keys on this plan now (give this or `owner_id`).
    pub plan_id: Option<Uuid>,
    /// Start (RFC 3339, inclusive); default: a day before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<DateTime<Utc>>,
    /// `minute`, `hour` (default) or `day`; at most 44,640 buckets per answer.
    pub granularity: Option<GranularityParam>,
}

/// The usage of all keys of an owner or a plan, summed per bucket.
#[utoipa::path(
    tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, body = Usage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["usage:read"]))
)]
#[get("/usage")]
pub async fn usage_summary(
    _auth: Authorized<UsageRead>,
    state: web::Data<AppState>,
    query: web::Query<UsageQuery>,
) -> Result<web::Json<Usage>, ApiError> {
    let query = query.into_inner();
    let scope = match (&query.owner_id, query.plan_id) {
        (Some(owner), None) if !owner.is_empty() && !owner.contains('\0') => {
            UsageScope::Owner(owner)
        }
        (None, Some(plan)) => UsageScope::Plan(plan),
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "owner_id",
                "give owner_id or plan_id, not both",
            ));
        }
        _ => return Err(ApiError::field("owner_id", "give owner_id or plan_id")),
    };
    let granularity = query.granularity.unwrap_or_default();
    let (from, to) = usage::range(query.from, query.to, granularity.into())?;
    let buckets = usage::of_scope(&state, scope, from, to, granularity.into()).await?;
    Ok(web::Json(Usage {
        key_id: None,
        owner_id: query.owner_id.clone(),
        plan_id: query.plan_id,
        granularity,
        from,
        to,
        buckets: buckets.into_iter().map(Into::into).collect(),
    }))
}
