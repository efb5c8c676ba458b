use actix_web::{get, web};

use super::json::AdminToken;
use crate::auth::{AdminOnly, Authorized};
use crate::error::{ApiError, Problem};
use crate::operations::admin_tokens;
use crate::pagination::{Page, PageQuery, finish, page_size, uuid_cursor};
use crate::state::AppState;

/// List admin tokens that are not deleted (never their secrets).
#[utoipa::path(
    tag = "admin tokens",
    params(PageQuery),
    responses(
        (status = 200, body = Page<AdminToken>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["admin"]))
)]
#[get("/admin-tokens")]
pub async fn list_admin_tokens(
    _auth: Authorized<AdminOnly>,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<AdminToken>>, ApiError> {
    let (limit, fetch) = page_size(query.limit)?;
    let rows = admin_tokens::list(&state, uuid_cursor(query.cursor.as_deref())?, fetch).await?;
    Ok(web::Json(finish(
        rows,
        limit,
        |r| r.id.to_string(),
        AdminToken::from,
    )))
}
