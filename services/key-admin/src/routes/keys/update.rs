use actix_web::{patch, web};
use uuid::Uuid;

use super::json::{Key, UpdateKey};
use crate::auth::{Authorized, KeysWrite};
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::operations::keys;
use crate::state::AppState;

/// Change a key; limiters follow within a second.
#[utoipa::path(
    tag = "keys",
    params(("id" = Uuid, Path, description = "Key id")),
    request_body = UpdateKey,
    responses(
        (status = 200, body = Key),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["keys:write"]))
)]
#[patch("/keys/{id}")]
pub async fn update_key(
    auth: Authorized<KeysWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: JsonBody<UpdateKey>,
) -> Result<web::Json<Key>, ApiError> {
    let view = keys::update(&state, &auth.actor(), *id, body.0.into()).await?;
    Ok(web::Json(view.into()))
}
