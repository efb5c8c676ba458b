use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

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

pub async fn find_by_hash(
    conn: &mut AsyncPgConnection,
    token_hash: &str,
) -> QueryResult<Option<AdminTokenRow>> {
    admin_tokens::table
        .filter(admin_tokens::token_hash.eq(token_hash))
        .select(AdminTokenRow::as_select())
        .first(conn)
        .await
        .optional()
}
