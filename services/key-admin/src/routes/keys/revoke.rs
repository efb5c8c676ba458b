use actix_web::{post, web};
use uuid::Uuid;

use super::json::Key;
use crate::auth::{Authorized, KeysWrite};
use crate::error::{ApiError, Problem};
use crate::operations::keys;
use crate::state::AppState;

/// Revoke a key, for good. Revoking a revoked key changes nothing.
#[utoipa::path(
    tag = "keys",
    params(("id" = Uuid, Path, description = "Key id")),
    responses(
        (status = 200, body = Key),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["keys:write"]))
)]
#[post("/keys/{id}/revoke")]
pub async fn revoke_key(
    auth: Authorized<KeysWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<web::Json<Key>, ApiError> {
    Ok(web::Json(
        keys::revoke(&state, &auth.actor(), *id).await?.into(),
    ))
}
