use actix_web::{HttpResponse, delete, web};
use uuid::Uuid;

use crate::auth::{Authorized, KeysWrite};
use crate::error::{ApiError, Problem};
use crate::operations::keys;
use crate::state::AppState;

/// Delete a key: it stops working and leaves lists; its usage history stays.
#[utoipa::path(
    tag = "keys",
    params(("id" = Uuid, Path, description = "Key id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["keys:write"]))
)]
#[delete("/keys/{id}")]
pub async fn delete_key(
    auth: Authorized<KeysWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    keys::delete(&state, &auth.actor(), *id).await?;
    Ok(HttpResponse::NoContent().finish())
}
