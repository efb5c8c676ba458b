use actix_web::{HttpResponse, delete, web};
use uuid::Uuid;

use crate::auth::{AdminOnly, Authorized};
use crate::error::{ApiError, Problem};
use crate::operations::admin_tokens;
use crate::state::AppState;

/// Delete an admin token; it is refused from the next request on.
#[utoipa::path(
    tag = "admin tokens",
    params(("id" = Uuid, Path, description = "Admin token id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["admin"]))
)]
#[delete("/admin-tokens/{id}")]
pub async fn delete_admin_token(
    auth: Authorized<AdminOnly>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    admin_tokens::delete(&state, &auth.actor(), *id).await?;
    Ok(HttpResponse::NoContent().finish())
}
