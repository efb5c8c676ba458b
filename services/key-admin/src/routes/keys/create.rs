use actix_web::{HttpResponse, post, web};

use super::json::{CreateKey, KeyWithSecret};
use crate::auth::{Authorized, KeysWrite};
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::operations::keys;
use crate::state::AppState;

/// Create a key. The raw key is in this answer and nowhere else, ever.
#[utoipa::path(
    tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created", body = KeyWithSecret),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["keys:write"]))
)]
#[post("/keys")]
pub async fn create_key(
    auth: Authorized<KeysWrite>,
    state: web::Data<AppState>,
    body: JsonBody<CreateKey>,
) -> Result<HttpResponse, ApiError> {
    let (key, view) = keys::create(&state, &auth.actor(), body.0.into()).await?;
    Ok(HttpResponse::Created().json(KeyWithSecret {
        key: key.expose().to_owned(),
        details: view.into(),
    }))
}
