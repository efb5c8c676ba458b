use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::models::NewAuditEntry;
use crate::schema::audit_log;

pub async fn record(
    conn: &mut AsyncPgConnection,
    entry: &NewAuditEntry,
) -> diesel::QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values(entry)
        .execute(conn)
        .await
        .map(drop)
}
