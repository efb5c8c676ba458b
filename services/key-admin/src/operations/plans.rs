use diesel_async::AsyncConnection;
use domain::{Limit, ValidationErrors, validate_limits};
use storage::models::{NewPlan, PlanRow};
use storage::repositories::plans::{self, PlanChanges};
use tracing::Instrument;
use uuid::Uuid;

use super::{enqueue, record_audit};
use crate::error::ApiError;
use crate::state::AppState;

pub const MAX_NAME_LEN: usize = 100;

fn check_name(errors: &mut ValidationErrors, name: &str) {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_LEN || name.contains('\0') {
        errors.push(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters, without NUL"),
        );
    }
}

fn check_limits(errors: &mut ValidationErrors, limits: &[Limit]) {
    if let Err(e) = validate_limits("limits", limits) {
        errors.0.extend(e.0);
    }
}

fn limits_json(limits: &[Limit]) -> serde_json::Value {
    serde_json::to_value(limits).unwrap_or_default()
}

pub fn limits_of(row: &PlanRow) -> Vec<Limit> {
    serde_json::from_value(row.limits.clone()).unwrap_or_default()
}

fn name_taken(name: &str) -> ApiError {
    ApiError::Conflict(format!("a plan named {name:?} exists already"))
}

pub async fn create(
    state: &AppState,
    actor: &str,
    name: String,
    limits: Vec<Limit>,
) -> Result<PlanRow, ApiError> {
    let mut errors = ValidationErrors::default();
    check_name(&mut errors, &name);
    check_limits(&mut errors, &limits);
    errors.into_result()?;
    let mut conn = state.conn().await?;
    let new = NewPlan {
        id: Uuid::now_v7(),
        name: name.clone(),
        limits: limits_json(&limits),
    };
    let created = conn
        .transaction(async |conn| {
            let row = plans::insert(conn, &new).await?;
            record_audit(
                conn,
                actor,
                "plan.create",
                "plan",
                row.id.to_string(),
                serde_json::json!({"name": row.name, "limits": row.limits}),
            )
            .await?;
            Ok::<_, diesel::result::Error>(row)
        })
        .instrument(storage::postgres::transaction_span("plans::create"))
        .await;
    created.map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => name_taken(&name),
        other => other,
    })
}

pub async fn get(state: &AppState, id: Uuid) -> Result<PlanRow, ApiError> {
    let mut conn = state.conn().await?;
    plans::get(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("plan"))
}

pub async fn list(
    state: &AppState,
    after: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<PlanRow>, ApiError> {
    let mut conn = state.conn().await?;
    Ok(plans::list(&mut conn, after, fetch).await?)
}

/// Renames or changes limits; keys on the plan follow through the outbox.
pub async fn update(
    state: &AppState,
    actor: &str,
    id: Uuid,
    name: Option<String>,
    limits: Option<Vec<Limit>>,
) -> Result<PlanRow, ApiError> {
    let mut errors = ValidationErrors::default();
    if let Some(name) = &name {
        check_name(&mut errors, name);
    }
    if let Some(limits) = &limits {
        check_limits(&mut errors, limits);
    }
    errors.into_result()?;
    let mut conn = state.conn().await?;
    let changes = PlanChanges {
        name: name.clone(),
        limits: limits.as_deref().map(limits_json),
    };
    let result = conn
        .transaction(async |conn| {
            let Some(before) = plans::get_for_update(conn, id).await? else {
                return Ok(None);
            };
            let row = plans::update(conn, id, &changes).await?;
            let mut changed = serde_json::Map::new();
            if row.name != before.name {
                changed.insert(
                    "name".into(),
                    serde_json::json!({"from": before.name, "to": row.name}),
                );
            }
            if row.limits != before.limits {
                changed.insert(
                    "limits".into(),
                    serde_json::json!({"from": before.limits, "to": row.limits}),
                );
                enqueue(conn, "plan", id, "plan_updated", serde_json::json!({})).await?;
            }
            record_audit(
                conn,
                actor,
                "plan.update",
                "plan",
                id.to_string(),
                changed.into(),
            )
            .await?;
            Ok::<_, diesel::result::Error>(Some(row))
        })
        .instrument(storage::postgres::transaction_span("plans::update"))
        .await;
    let row = result
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict(_) => name_taken(name.as_deref().unwrap_or_default()),
            other => other,
        })?
        .ok_or(ApiError::NotFound("plan"))?;
    state.relay_wakeup.notify_one();
    Ok(row)
}

pub async fn delete(state: &AppState, actor: &str, id: Uuid) -> Result<(), ApiError> {
    let mut conn = state.conn().await?;
    conn.transaction(async |conn| {
        let Some(plan) = plans::get_for_update(conn, id).await? else {
            return Err(ApiError::NotFound("plan"));
        };
        let in_use = plans::live_key_count(conn, id).await?;
        if in_use > 0 {
            return Err(ApiError::Conflict(format!(
                "{in_use} key(s) use this plan; move or delete them first"
            )));
        }
        plans::delete(conn, id).await?;
        record_audit(
            conn,
            actor,
            "plan.delete",
            "plan",
            id.to_string(),
            serde_json::json!({"name": plan.name}),
        )
        .await?;
        Ok(())
    })
    .instrument(storage::postgres::transaction_span("plans::delete"))
    .await
}
