use chrono::{DateTime, Duration, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain::{
    ApiKey, Credits, KeyPrefix, KeyStatus, Limit, StatusFields, ValidationErrors, validate_limits,
};
use storage::models::{ApiKeyRow, NewApiKey, PlanRow};
use storage::repositories::api_keys::{self, KeyChanges, KeyFilter};
use storage::repositories::plans;
use tracing::Instrument;
use uuid::Uuid;

use super::{enqueue, record_audit};
use crate::error::ApiError;
use crate::operations::plans::limits_of;
use crate::state::AppState;

pub const MAX_METADATA_BYTES: usize = 4096;
pub const MAX_TEXT_LEN: usize = 200;
pub const MAX_GRACE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A key with the limits it runs under (its own or its plan's).
#[derive(Debug, Clone)]
pub struct KeyView {
    pub row: ApiKeyRow,
    pub limits: Vec<Limit>,
    pub status: KeyStatus,
}

impl KeyView {
    fn new(row: ApiKeyRow, plan: &PlanRow) -> Self {
        let limits = effective_limits(&row, plan);
        let status = status_of(&row, Utc::now());
        Self {
            row,
            limits,
            status,
        }
    }

    pub fn credits(&self) -> Option<Credits> {
        credits_of(&self.row)
    }
}

pub fn status_of(row: &ApiKeyRow, now: DateTime<Utc>) -> KeyStatus {
    KeyStatus::derive(
        StatusFields {
            enabled: row.enabled,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            deleted_at: row.deleted_at,
        },
        now,
    )
}

/// The key's own limits when it overrides them, else its plan's.
pub fn effective_limits(row: &ApiKeyRow, plan: &PlanRow) -> Vec<Limit> {
    match &row.limits {
        Some(own) => serde_json::from_value(own.clone()).unwrap_or_default(),
        None => limits_of(plan),
    }
}

pub fn credits_of(row: &ApiKeyRow) -> Option<Credits> {
    row.credits
        .as_ref()
        .and_then(|c| serde_json::from_value(c.clone()).ok())
}

/// What a new key may say; every field but the plan is optional.
#[derive(Debug, Default)]
pub struct NewKeyInput {
    pub plan_id: Uuid,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    pub prefix: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub limits: Option<Vec<Limit>>,
    pub credits: Option<Credits>,
    pub metadata: Option<serde_json::Value>,
    pub enabled: Option<bool>,
}

/// A PATCH: `None` leaves a field alone; `Some(None)` clears a field that may be empty.
#[derive(Debug, Default)]
pub struct KeyUpdate {
    pub name: Option<Option<String>>,
    pub owner_id: Option<Option<String>>,
    pub plan_id: Option<Uuid>,
    pub limits: Option<Option<Vec<Limit>>>,
    pub credits: Option<Option<Credits>>,
    pub metadata: Option<serde_json::Value>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub enabled: Option<bool>,
}

fn check_text(errors: &mut ValidationErrors, field: &str, value: Option<&str>) {
    if let Some(value) = value
        && (value.trim().is_empty() || value.chars().count() > MAX_TEXT_LEN || value.contains('\0'))
    {
        errors.push(
            field,
            format!("must be 1 to {MAX_TEXT_LEN} characters, without NUL"),
        );
    }
}

fn check_metadata(errors: &mut ValidationErrors, metadata: Option<&serde_json::Value>) {
    if let Some(metadata) = metadata {
        if !metadata.is_object() {
            errors.push("metadata", "must be a JSON object");
        } else if domain::contains_nul(metadata) {
            errors.push("metadata", "may not contain NUL characters");
        } else if domain::contains_extreme_number(metadata) {
            errors.push("metadata", "numbers must be within ±1e300");
        } else if metadata.to_string().len() > MAX_METADATA_BYTES {
            errors.push(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
            );
        }
    }
}

fn check_limits_and_credits(
    errors: &mut ValidationErrors,
    limits: Option<&[Limit]>,
    credits: Option<&Credits>,
) {
    if let Some(limits) = limits
        && let Err(e) = validate_limits("limits", limits)
    {
        errors.0.extend(e.0);
    }
    if let Some(credits) = credits
        && let Err(e) = credits.validate("credits")
    {
        errors.0.extend(e.0);
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

async fn live_plan(conn: &mut AsyncPgConnection, plan_id: Uuid) -> Result<PlanRow, ApiError> {
    plans::get_for_share(conn, plan_id)
        .await?
        .ok_or_else(|| ApiError::field("plan_id", "no such plan"))
}

async fn view(conn: &mut AsyncPgConnection, row: ApiKeyRow) -> Result<KeyView, ApiError> {
    let plan = plans::get_any(conn, row.plan_id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("key {} has no plan", row.id)))?;
    Ok(KeyView::new(row, &plan))
}

pub async fn create(
    state: &AppState,
    actor: &str,
    input: NewKeyInput,
) -> Result<(ApiKey, KeyView), ApiError> {
    let mut errors = ValidationErrors::default();
    check_text(&mut errors, "name", input.name.as_deref());
    check_text(&mut errors, "owner_id", input.owner_id.as_deref());
    check_metadata(&mut errors, input.metadata.as_ref());
    check_limits_and_credits(&mut errors, input.limits.as_deref(), input.credits.as_ref());
    let prefix = match input.prefix.as_deref().map(KeyPrefix::parse).transpose() {
        Ok(prefix) => prefix.unwrap_or_default(),
        Err(e) => {
            errors.push("prefix", e.to_string());
            KeyPrefix::default()
        }
    };
    if input.expires_at.is_some_and(|at| at <= Utc::now()) {
        errors.push("expires_at", "must be in the future");
    }
    errors.into_result()?;

    let key = ApiKey::generate(&prefix);
    let new = NewApiKey {
        id: Uuid::now_v7(),
        plan_id: input.plan_id,
        name: input.name,
        owner_id: input.owner_id,
        prefix: prefix.as_str().to_owned(),
        start: key.start().to_owned(),
        key_hash: state.pepper.hash_key(&key).into_string(),
        limits: input.limits.as_ref().map(to_json),
        credits: input.credits.as_ref().map(to_json),
        metadata: input.metadata.unwrap_or_else(|| serde_json::json!({})),
        enabled: input.enabled.unwrap_or(true),
        expires_at: input.expires_at,
    };
    let mut conn = state.conn().await?;
    let view = conn
        .transaction(async |conn| {
            let plan = live_plan(conn, new.plan_id).await?;
            let row = api_keys::insert(conn, &new).await?;
            record_audit(
                conn,
                actor,
                "key.create",
                "key",
                row.id.to_string(),
                serde_json::json!({
                    "plan_id": row.plan_id, "name": row.name, "owner_id": row.owner_id,
                    "prefix": row.prefix, "start": row.start, "limits": row.limits,
                    "credits": row.credits, "metadata": row.metadata,
                    "enabled": row.enabled, "expires_at": row.expires_at,
                }),
            )
            .await?;
            enqueue(
                conn,
                "key",
                row.id,
                "created",
                serde_json::json!({"reset_credits": true}),
            )
            .await?;
            Ok::<_, ApiError>(KeyView::new(row, &plan))
        })
        .instrument(storage::postgres::transaction_span("keys::create"))
        .await?;
    state.relay_wakeup.notify_one();
    Ok((key, view))
}

pub async fn get(state: &AppState, id: Uuid) -> Result<KeyView, ApiError> {
    let mut conn = state.conn().await?;
    let row = api_keys::get(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    view(&mut conn, row).await
}

pub async fn list(
    state: &AppState,
    filter: &KeyFilter,
    fetch: i64,
) -> Result<Vec<KeyView>, ApiError> {
    let mut conn = state.conn().await?;
    let rows = api_keys::list(&mut conn, filter, fetch).await?;
    let mut plans_by_id = std::collections::HashMap::new();
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let plan = match plans_by_id.entry(row.plan_id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let plan = plans::get_any(&mut conn, row.plan_id)
                    .await?
                    .ok_or_else(|| ApiError::Internal(format!("key {} has no plan", row.id)))?;
                entry.insert(plan)
            }
        };
        views.push(KeyView::new(row, plan));
    }
    Ok(views)
}

/// The key, locked for the rest of the transaction; 404 when missing or deleted.
async fn locked(conn: &mut AsyncPgConnection, id: Uuid) -> Result<ApiKeyRow, ApiError> {
    api_keys::get_for_update(conn, id)
        .await?
        .ok_or(ApiError::NotFound("key"))
}

fn refuse_if_revoked(row: &ApiKeyRow) -> Result<(), ApiError> {
    if row.revoked_at.is_some() {
        return Err(ApiError::Conflict(
            "the key is revoked; a revoked key cannot change".into(),
        ));
    }
    Ok(())
}

pub async fn update(
    state: &AppState,
    actor: &str,
    id: Uuid,
    update: KeyUpdate,
) -> Result<KeyView, ApiError> {
    let mut errors = ValidationErrors::default();
    check_text(
        &mut errors,
        "name",
        update.name.as_ref().and_then(|n| n.as_deref()),
    );
    check_text(
        &mut errors,
        "owner_id",
        update.owner_id.as_ref().and_then(|o| o.as_deref()),
    );
    check_metadata(&mut errors, update.metadata.as_ref());
    check_limits_and_credits(
        &mut errors,
        update.limits.as_ref().and_then(|l| l.as_deref()),
        update.credits.as_ref().and_then(|c| c.as_ref()),
    );
    errors.into_result()?;
    let changes = KeyChanges {
        name: update.name,
        owner_id: update.owner_id,
        plan_id: update.plan_id,
        limits: update.limits.map(|l| l.as_ref().map(to_json)),
        credits: update.credits.map(|c| c.as_ref().map(to_json)),
        metadata: update.metadata,
        expires_at: update.expires_at,
        enabled: update.enabled,
        ..KeyChanges::default()
    };
    let mut conn = state.conn().await?;
    let view = conn
        .transaction(async |conn| {
            let before = locked(conn, id).await?;
            refuse_if_revoked(&before)?;
            if let Some(plan_id) = changes.plan_id {
                live_plan(conn, plan_id).await?;
            }
            let row = api_keys::update(conn, id, &changes).await?;
            let mut diff = diff_fields(&before, &row);
            // Credits sent again unchanged still set the balance back (a top-up).
            let credits_changed = changes.credits.is_some();
            if credits_changed && let Some(fields) = diff.as_object_mut() {
                fields.insert("credits_reset".into(), serde_json::Value::Bool(true));
            }
            record_audit(conn, actor, "key.update", "key", id.to_string(), diff).await?;
            enqueue(
                conn,
                "key",
                id,
                "updated",
                serde_json::json!({"reset_credits": credits_changed}),
            )
            .await?;
            view(conn, row).await
        })
        .instrument(storage::postgres::transaction_span("keys::update"))
        .await?;
    state.relay_wakeup.notify_one();
    Ok(view)
}

/// `{field: {from, to}}` for each field that changed.
fn diff_fields(before: &ApiKeyRow, after: &ApiKeyRow) -> serde_json::Value {
    let mut diff = serde_json::Map::new();
    let mut compare = |name: &str, from: serde_json::Value, to: serde_json::Value| {
        if from != to {
            diff.insert(name.to_owned(), serde_json::json!({"from": from, "to": to}));
        }
    };
    compare("name", to_json(&before.name), to_json(&after.name));
    compare(
        "owner_id",
        to_json(&before.owner_id),
        to_json(&after.owner_id),
    );
    compare("plan_id", to_json(&before.plan_id), to_json(&after.plan_id));
    compare("limits", to_json(&before.limits), to_json(&after.limits));
    compare("credits", to_json(&before.credits), to_json(&after.credits));
    compare("metadata", before.metadata.clone(), after.metadata.clone());
    compare(
        "expires_at",
        to_json(&before.expires_at),
        to_json(&after.expires_at),
    );
    compare("enabled", to_json(&before.enabled), to_json(&after.enabled));
    diff.into()
}

pub async fn revoke(state: &AppState, actor: &str, id: Uuid) -> Result<KeyView, ApiError> {
    let mut conn = state.conn().await?;
    let view = conn
        .transaction(async |conn| {
            let before = locked(conn, id).await?;
            if before.revoked_at.is_some() {
                return view(conn, before).await;
            }
            let row = api_keys::update(
                conn,
                id,
                &KeyChanges {
                    revoked_at: Some(Utc::now()),
                    ..KeyChanges::default()
                },
            )
            .await?;
            record_audit(
                conn,
                actor,
                "key.revoke",
                "key",
                id.to_string(),
                serde_json::json!({"revoked_at": row.revoked_at}),
            )
            .await?;
            enqueue(conn, "key", id, "revoked", serde_json::json!({})).await?;
            view(conn, row).await
        })
        .instrument(storage::postgres::transaction_span("keys::revoke"))
        .await?;
    state.relay_wakeup.notify_one();
    Ok(view)
}

/// A new secret; the old one keeps working for `grace_ms` and shares the key's counters.
pub async fn rotate(
    state: &AppState,
    actor: &str,
    id: Uuid,
    grace_ms: u64,
) -> Result<(ApiKey, KeyView), ApiError> {
    if grace_ms > MAX_GRACE_MS {
        return Err(ApiError::field(
            "grace_period_ms",
            format!("must be from 0 to {MAX_GRACE_MS} (7 days)"),
        ));
    }
    let mut conn = state.conn().await?;
    let (key, view) = conn.transaction(async |conn| {
        let before = locked(conn, id).await?;
        refuse_if_revoked(&before)?;
        let prefix = KeyPrefix::parse(&before.prefix).unwrap_or_default();
        let key = ApiKey::generate(&prefix);
        let grace_until = (grace_ms > 0)
            .then(|| Utc::now() + Duration::milliseconds(i64::try_from(grace_ms).unwrap_or(0)));
        let row = api_keys::rotate(
            conn,
            id,
            state.pepper.hash_key(&key).as_str(),
            key.start(),
            &before.key_hash,
            grace_until,
        )
        .await?;
        record_audit(
            conn,
            actor,
            "key.rotate",
            "key",
            id.to_string(),
            serde_json::json!({"start": {"from": before.start, "to": row.start}, "grace_until": grace_until}),
        )
        .await?;
        // A secret from an earlier rotation whose grace had not ended stops now.
        let retired: Vec<&str> = before.previous_key_hash.as_deref().into_iter().collect();
        let mut remove = retired;
        if grace_until.is_none() {
            remove.push(&before.key_hash);
        }
        enqueue(conn, "key", id, "rotated", serde_json::json!({"remove_hashes": remove})).await?;
        Ok::<_, ApiError>((key, view(conn, row).await?))
    })
    .instrument(storage::postgres::transaction_span("keys::rotate"))
    .await?;
    state.relay_wakeup.notify_one();
    Ok((key, view))
}

pub async fn delete(state: &AppState, actor: &str, id: Uuid) -> Result<(), ApiError> {
    let mut conn = state.conn().await?;
    conn.transaction(async |conn| {
        locked(conn, id).await?;
        api_keys::update(
            conn,
            id,
            &KeyChanges {
                deleted_at: Some(Utc::now()),
                ..KeyChanges::default()
            },
        )
        .await?;
        record_audit(
            conn,
            actor,
            "key.delete",
            "key",
            id.to_string(),
            serde_json::json!({}),
        )
        .await?;
        enqueue(conn, "key", id, "deleted", serde_json::json!({})).await?;
        Ok::<_, ApiError>(())
    })
    .instrument(storage::postgres::transaction_span("keys::delete"))
    .await?;
    state.relay_wakeup.notify_one();
    Ok(())
}
