use actix_web::{post, web};
use uuid::Uuid;

use super::json::{KeyWithSecret, RotateKey};
use crate::auth::{Authorized, KeysWrite};
use crate::body::OptionalJsonBody;
use crate::error::{ApiError, Problem};
use crate::operations::keys;
use crate::state::AppState;

/// Give a key a new secret. The old secret keeps working until the grace period ends, with
/// the same counters.
#[utoipa::path(
    tag = "keys",
    params(("id" = Uuid, Path, description = "Key id")),
    request_body(content = Option<RotateKey>, description = "Optional; an empty body means no grace period"),
    responses(
        (status = 200, body = KeyWithSecret),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["keys:write"]))
)]
#[post("/keys/{id}/rotate")]
pub async fn rotate_key(
    auth: Authorized<KeysWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: OptionalJsonBody<RotateKey>,
) -> Result<web::Json<KeyWithSecret>, ApiError> {
    let grace = body.0.and_then(|b| b.grace_period_ms).unwrap_or(0);
    let (key, view) = keys::rotate(&state, &auth.actor(), *id, grace).await?;
    Ok(web::Json(KeyWithSecret {
        key: key.expose().to_owned(),
        details: view.into(),
    }))
}
