use actix_web::{get, web};
use storage::repositories::api_keys::KeyFilter;

use super::json::{Key, KeyListQuery};
use crate::auth::{Authorized, KeysRead};
use crate::error::{ApiError, Problem};
use crate::operations::keys;
use crate::pagination::{Page, finish, page_size, uuid_cursor};
use crate::state::AppState;

/// List keys, oldest first, filtered by owner, plan or status.
#[utoipa::path(
    tag = "keys",
    params(KeyListQuery),
    responses(
        (status = 200, body = Page<Key>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["keys:read"]))
)]
#[get("/keys")]
pub async fn list_keys(
    _auth: Authorized<KeysRead>,
    state: web::Data<AppState>,
    query: web::Query<KeyListQuery>,
) -> Result<web::Json<Page<Key>>, ApiError> {
    let query = query.into_inner();
    let (limit, fetch) = page_size(query.limit)?;
    let filter = KeyFilter {
        owner_id: query.owner_id,
        plan_id: query.plan_id,
        status: query.status,
        after: uuid_cursor(query.cursor.as_deref())?,
    };
    let views = keys::list(&state, &filter, fetch).await?;
    Ok(web::Json(finish(
        views,
        limit,
        |v| v.row.id.to_string(),
        Key::from,
    )))
}
