use actix_web::{get, web};
use uuid::Uuid;

use super::json::Plan;
use crate::auth::{Authorized, PlansRead};
use crate::error::{ApiError, Problem};
use crate::operations::plans;
use crate::state::AppState;

/// Read one plan.
#[utoipa::path(
    tag = "plans",
    params(("id" = Uuid, Path, description = "Plan id")),
    responses(
        (status = 200, body = Plan),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["plans:read"]))
)]
#[get("/plans/{id}")]
pub async fn get_plan(
    _auth: Authorized<PlansRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<web::Json<Plan>, ApiError> {
    Ok(web::Json(plans::get(&state, *id).await?.into()))
}
