use actix_web::{get, web};

use super::json::Plan;
use crate::auth::{Authorized, PlansRead};
use crate::error::{ApiError, Problem};
use crate::operations::plans;
use crate::pagination::{Page, PageQuery, finish, page_size, uuid_cursor};
use crate::state::AppState;

/// List plans, oldest first.
#[utoipa::path(
    tag = "plans",
    params(PageQuery),
    responses(
        (status = 200, body = Page<Plan>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["plans:read"]))
)]
#[get("/plans")]
pub async fn list_plans(
    _auth: Authorized<PlansRead>,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<Plan>>, ApiError> {
    let (limit, fetch) = page_size(query.limit)?;
    let after = uuid_cursor(query.cursor.as_deref())?;
    let rows = plans::list(&state, after, fetch).await?;
    Ok(web::Json(finish(
        rows,
        limit,
        |r| r.id.to_string(),
        Plan::from,
    )))
}
