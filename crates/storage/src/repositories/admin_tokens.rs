use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::{AdminTokenRow, NewAdminToken};
use crate::schema::admin_tokens;

/// Inserts a token unless one with the same hash exists; `None` when it already did.
pub async fn insert_if_absent(
    conn: &mut AsyncPgConnection,
    token: &NewAdminToken,
) -> QueryResult<Option<AdminTokenRow>> {
    diesel::insert_into(admin_tokens::table)
        .values(token)
        .on_conflict(admin_tokens::token_hash)
        .do_nothing()
        .returning(AdminTokenRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// A token that is not deleted, by the hash of its secret.
pub async fn find_live_by_hash(
    conn: &mut AsyncPgConnection,
    token_hash: &str,
) -> QueryResult<Option<AdminTokenRow>> {
    admin_tokens::table
        .filter(
            admin_tokens::token_hash
                .eq(token_hash)
                .and(admin_tokens::deleted_at.is_null()),
        )
        .select(AdminTokenRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<AdminTokenRow>> {
    let mut query = admin_tokens::table
        .filter(admin_tokens::deleted_at.is_null())
        .select(AdminTokenRow::as_select())
        .order(admin_tokens::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(admin_tokens::id.gt(after));
    }
    query.load(conn).await
}

/// Marks a live token deleted; `None` when there was none.
pub async fn soft_delete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<AdminTokenRow>> {
    diesel::update(
        admin_tokens::table.filter(
            admin_tokens::id
                .eq(id)
                .and(admin_tokens::deleted_at.is_null()),
        ),
    )
    .set(admin_tokens::deleted_at.eq(Utc::now()))
    .returning(AdminTokenRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}
