use actix_web::{get, web};
use uuid::Uuid;

use super::json::Key;
use crate::auth::{Authorized, KeysRead};
use crate::error::{ApiError, Problem};
use crate::operations::keys;
use crate::state::AppState;

/// Read one key.
#[utoipa::path(
    tag = "keys",
    params(("id" = Uuid, Path, description = "Key id")),
    responses(
        (status = 200, body = Key),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["keys:read"]))
)]
#[get("/keys/{id}")]
pub async fn get_key(
    _auth: Authorized<KeysRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<web::Json<Key>, ApiError> {
    Ok(web::Json(keys::get(&state, *id).await?.into()))
}
