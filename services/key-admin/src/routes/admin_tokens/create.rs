use actix_web::{HttpResponse, post, web};

use super::json::{AdminTokenWithSecret, CreateAdminToken};
use crate::auth::{AdminOnly, Authorized};
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::operations::admin_tokens;
use crate::state::AppState;

/// Create an admin token. The raw token is in this answer only.
#[utoipa::path(
    tag = "admin tokens",
    request_body = CreateAdminToken,
    responses(
        (status = 201, body = AdminTokenWithSecret),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["admin"]))
)]
#[post("/admin-tokens")]
pub async fn create_admin_token(
    auth: Authorized<AdminOnly>,
    state: web::Data<AppState>,
    body: JsonBody<CreateAdminToken>,
) -> Result<HttpResponse, ApiError> {
    let JsonBody(body) = body;
    let (token, row) = admin_tokens::create(
        &state,
        &auth.actor(),
        body.name,
        body.scopes,
        body.expires_at,
    )
    .await?;
    Ok(HttpResponse::Created().json(AdminTokenWithSecret {
        token,
        details: row.into(),
    }))
}
