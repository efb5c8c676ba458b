use actix_web::{HttpResponse, delete, web};
use uuid::Uuid;

use crate::auth::{Authorized, PlansWrite};
use crate::error::{ApiError, Problem};
use crate::operations::plans;
use crate::state::AppState;

/// Delete a plan that no key uses.
#[utoipa::path(
    tag = "plans",
    params(("id" = Uuid, Path, description = "Plan id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Keys use the plan", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["plans:write"]))
)]
#[delete("/plans/{id}")]
pub async fn delete_plan(
    auth: Authorized<PlansWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    plans::delete(&state, &auth.actor(), *id).await?;
    Ok(HttpResponse::NoContent().finish())
}
