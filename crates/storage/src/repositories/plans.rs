use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::{NewPlan, PlanRow};
use crate::schema::{api_keys, plans};

pub async fn insert(conn: &mut AsyncPgConnection, plan: &NewPlan) -> QueryResult<PlanRow> {
    diesel::insert_into(plans::table)
        .values(plan)
        .returning(PlanRow::as_returning())
        .get_result(conn)
        .await
}

/// A plan that is not deleted.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<PlanRow>> {
    plans::table
        .filter(plans::id.eq(id).and(plans::deleted_at.is_null()))
        .select(PlanRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A live plan, share-locked for the rest of the transaction: a key created on it or moved
/// onto it commits before the plan can be deleted, so the delete sees it and refuses.
pub async fn get_for_share(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<PlanRow>> {
    plans::table
        .filter(plans::id.eq(id).and(plans::deleted_at.is_null()))
        .select(PlanRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()
}

/// Locks the plan row for the rest of the transaction (update, delete).
pub async fn get_for_update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<PlanRow>> {
    plans::table
        .filter(plans::id.eq(id).and(plans::deleted_at.is_null()))
        .select(PlanRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Plans by id (time-ordered uuid v7), after `after`, at most `limit`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<PlanRow>> {
    let mut query = plans::table
        .filter(plans::deleted_at.is_null())
        .select(PlanRow::as_select())
        .order(plans::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(plans::id.gt(after));
    }
    query.load(conn).await
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = plans)]
pub struct PlanChanges {
    pub name: Option<String>,
    pub limits: Option<serde_json::Value>,
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    changes: &PlanChanges,
) -> QueryResult<PlanRow> {
    diesel::update(plans::table.filter(plans::id.eq(id)))
        .set((changes, plans::updated_at.eq(Utc::now())))
        .returning(PlanRow::as_returning())
        .get_result(conn)
        .await
}

/// How many keys that are not deleted use the plan.
pub async fn live_key_count(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<i64> {
    api_keys::table
        .filter(api_keys::plan_id.eq(id).and(api_keys::deleted_at.is_null()))
        .count()
        .get_result(conn)
        .await
}

/// Removes the plan, or hides it when deleted keys still reference it (their usage history
/// keeps its plan). The caller checks that no live key uses it.
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<()> {
    let referenced: i64 = api_keys::table
        .filter(api_keys::plan_id.eq(id))
        .count()
        .get_result(conn)
        .await?;
    if referenced == 0 {
        diesel::delete(plans::table.filter(plans::id.eq(id)))
            .execute(conn)
            .await?;
    } else {
        diesel::update(plans::table.filter(plans::id.eq(id)))
            .set(plans::deleted_at.eq(Utc::now()))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Every plan that is not deleted (for a full resync).
pub async fn all(conn: &mut AsyncPgConnection) -> QueryResult<Vec<PlanRow>> {
    plans::table
        .filter(plans::deleted_at.is_null())
        .select(PlanRow::as_select())
        .load(conn)
        .await
}

/// A plan in any state (a deleted key may still point at a hidden plan).
pub async fn get_any(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<PlanRow>> {
    plans::table
        .filter(plans::id.eq(id))
        .select(PlanRow::as_select())
        .first(conn)
        .await
        .optional()
}
