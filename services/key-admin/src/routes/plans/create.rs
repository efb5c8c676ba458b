use actix_web::{HttpResponse, post, web};

use super::json::{CreatePlan, Plan};
use crate::auth::{Authorized, PlansWrite};
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::operations::plans;
use crate::state::AppState;

/// Create a plan.
#[utoipa::path(
    tag = "plans",
    request_body = CreatePlan,
    responses(
        (status = 201, description = "Created", body = Plan),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["plans:write"]))
)]
#[post("/plans")]
pub async fn create_plan(
    auth: Authorized<PlansWrite>,
    state: web::Data<AppState>,
    body: JsonBody<CreatePlan>,
) -> Result<HttpResponse, ApiError> {
    let JsonBody(body) = body;
    let row = plans::create(&state, &auth.actor(), body.name, body.limits).await?;
    Ok(HttpResponse::Created().json(Plan::from(row)))
}
