use actix_web::{patch, web};
use uuid::Uuid;

use super::json::{Plan, UpdatePlan};
use crate::auth::{Authorized, PlansWrite};
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::operations::plans;
use crate::state::AppState;

/// Rename a plan or replace its limits; every key on it follows within a second.
#[utoipa::path(
    tag = "plans",
    params(("id" = Uuid, Path, description = "Plan id")),
    request_body = UpdatePlan,
    responses(
        (status = 200, body = Plan),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["plans:write"]))
)]
#[patch("/plans/{id}")]
pub async fn update_plan(
    auth: Authorized<PlansWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: JsonBody<UpdatePlan>,
) -> Result<web::Json<Plan>, ApiError> {
    let JsonBody(body) = body;
    let row = plans::update(&state, &auth.actor(), *id, body.name, body.limits).await?;
    Ok(web::Json(row.into()))
}
