use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::models::{AuditRow, NewAuditEntry};
use crate::schema::audit_log;

pub async fn record(conn: &mut AsyncPgConnection, entry: &NewAuditEntry) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values(entry)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Entries older than this id (the cursor; newest first).
    pub before: Option<i64>,
}

pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &AuditFilter,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let mut query = audit_log::table
        .select(AuditRow::as_select())
        .order(audit_log::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(v) = &filter.target_type {
        query = query.filter(audit_log::target_type.eq(v.clone()));
    }
    if let Some(v) = &filter.target_id {
        query = query.filter(audit_log::target_id.eq(v.clone()));
    }
    if let Some(v) = &filter.actor {
        query = query.filter(audit_log::actor.eq(v.clone()));
    }
    if let Some(v) = &filter.action {
        query = query.filter(audit_log::action.eq(v.clone()));
    }
    if let Some(v) = filter.from {
        query = query.filter(audit_log::at.ge(v));
    }
    if let Some(v) = filter.to {
        query = query.filter(audit_log::at.lt(v));
    }
    if let Some(v) = filter.before {
        query = query.filter(audit_log::id.lt(v));
    }
    query.load(conn).await
}
