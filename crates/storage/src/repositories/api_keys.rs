use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::KeyStatus;
use uuid::Uuid;

use crate::models::{ApiKeyRow, NewApiKey};
use crate::schema::api_keys;

pub async fn insert(conn: &mut AsyncPgConnection, key: &NewApiKey) -> QueryResult<ApiKeyRow> {
    diesel::insert_into(api_keys::table)
        .values(key)
        .returning(ApiKeyRow::as_returning())
        .get_result(conn)
        .await
}

/// A key that is not deleted.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .filter(api_keys::id.eq(id).and(api_keys::deleted_at.is_null()))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A key in any state, deleted included (the projection needs to see deletions).
pub async fn get_any(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .filter(api_keys::id.eq(id))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Locks a key that is not deleted for the rest of the transaction.
pub async fn get_for_update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .filter(api_keys::id.eq(id).and(api_keys::deleted_at.is_null()))
        .select(ApiKeyRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

#[derive(Debug, Default, Clone)]
pub struct KeyFilter {
    pub owner_id: Option<String>,
    pub plan_id: Option<Uuid>,
    pub status: Option<KeyStatus>,
    pub after: Option<Uuid>,
}

/// Keys by id; deleted keys appear only when asked for with `status = deleted`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &KeyFilter,
    limit: i64,
) -> QueryResult<Vec<ApiKeyRow>> {
    let mut query = api_keys::table
        .select(ApiKeyRow::as_select())
        .order(api_keys::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(owner) = &filter.owner_id {
        query = query.filter(api_keys::owner_id.eq(owner.clone()));
    }
    if let Some(plan) = filter.plan_id {
        query = query.filter(api_keys::plan_id.eq(plan));
    }
    if let Some(after) = filter.after {
        query = query.filter(api_keys::id.gt(after));
    }
    // The same precedence as KeyStatus::derive, in SQL.
    let live = api_keys::deleted_at.is_null();
    let not_revoked = api_keys::revoked_at.is_null();
    let unexpired = api_keys::expires_at
        .is_null()
        .or(api_keys::expires_at.gt(now));
    query = match filter.status {
        None => query.filter(live),
        Some(KeyStatus::Deleted) => query.filter(api_keys::deleted_at.is_not_null()),
        Some(KeyStatus::Revoked) => query.filter(live.and(api_keys::revoked_at.is_not_null())),
        Some(KeyStatus::Disabled) => {
            query.filter(live.and(not_revoked).and(api_keys::enabled.eq(false)))
        }
        Some(KeyStatus::Expired) => query.filter(
            live.and(not_revoked)
                .and(api_keys::enabled.eq(true))
                .and(api_keys::expires_at.le(now)),
        ),
        Some(KeyStatus::Active) => query.filter(
            live.and(not_revoked)
                .and(api_keys::enabled.eq(true))
                .and(unexpired),
        ),
    };
    query.load(conn).await
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = api_keys)]
pub struct KeyChanges {
    pub name: Option<Option<String>>,
    pub owner_id: Option<Option<String>>,
    pub plan_id: Option<Uuid>,
    pub limits: Option<Option<serde_json::Value>>,
    pub credits: Option<Option<serde_json::Value>>,
    pub metadata: Option<serde_json::Value>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub enabled: Option<bool>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    changes: &KeyChanges,
) -> QueryResult<ApiKeyRow> {
    diesel::update(api_keys::table.filter(api_keys::id.eq(id)))
        .set((changes, api_keys::updated_at.eq(Utc::now())))
        .returning(ApiKeyRow::as_returning())
        .get_result(conn)
        .await
}

/// A rotation: the new secret's hash becomes current; the old one stays valid until
/// `grace_until` (or not at all when `None`).
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    new_hash: &str,
    new_start: &str,
    old_hash: &str,
    grace_until: Option<DateTime<Utc>>,
) -> QueryResult<ApiKeyRow> {
    let at = Utc::now();
    diesel::update(api_keys::table.filter(api_keys::id.eq(id)))
        .set((
            api_keys::key_hash.eq(new_hash),
            api_keys::start.eq(new_start),
            api_keys::previous_key_hash.eq(grace_until.map(|_| old_hash.to_owned())),
            api_keys::previous_key_expires_at.eq(grace_until),
            api_keys::rotated_at.eq(at),
            api_keys::updated_at.eq(at),
        ))
        .returning(ApiKeyRow::as_returning())
        .get_result(conn)
        .await
}

/// Keys that are not deleted on a plan, by id, a page at a time.
pub async fn live_on_plan(
    conn: &mut AsyncPgConnection,
    plan_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ApiKeyRow>> {
    list(
        conn,
        &KeyFilter {
            plan_id: Some(plan_id),
            after,
            ..KeyFilter::default()
        },
        limit,
    )
    .await
}

/// Every key in any state, by id, a page at a time (for a full resync).
pub async fn all_page(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ApiKeyRow>> {
    let mut query = api_keys::table
        .select(ApiKeyRow::as_select())
        .order(api_keys::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(api_keys::id.gt(after));
    }
    query.load(conn).await
}

/// The keys that have credits and can still spend them (not revoked, not deleted).
pub async fn ids_with_credits(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Uuid>> {
    api_keys::table
        .filter(
            api_keys::credits
                .is_not_null()
                .and(api_keys::deleted_at.is_null())
                .and(api_keys::revoked_at.is_null()),
        )
        .select(api_keys::id)
        .order(api_keys::id.asc())
        .load(conn)
        .await
}
