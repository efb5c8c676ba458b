use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use domain::{Scope, ValidationErrors};
use storage::models::{AdminTokenRow, NewAdminToken};
use storage::repositories::admin_tokens;
use tracing::Instrument;
use uuid::Uuid;

use super::record_audit;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn create(
    state: &AppState,
    actor: &str,
    name: String,
    scopes: Vec<Scope>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(String, AdminTokenRow), ApiError> {
    let mut errors = ValidationErrors::default();
    if name.trim().is_empty() || name.chars().count() > 100 || name.contains('\0') {
        errors.push("name", "must be 1 to 100 characters, without NUL");
    }
    if scopes.is_empty() {
        errors.push("scopes", "name at least one scope");
    }
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        errors.push("expires_at", "must be in the future");
    }
    errors.into_result()?;
    let token = domain::admin_token::generate_admin_token();
    let mut scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    scopes.sort();
    scopes.dedup();
    let new = NewAdminToken {
        id: Uuid::now_v7(),
        name,
        token_hash: state.pepper.hash_admin_token(&token).into_string(),
        scopes,
        expires_at,
    };
    let mut conn = state.conn().await?;
    let row = conn
        .transaction(async |conn| {
            let row = admin_tokens::insert_if_absent(conn, &new)
                .await?
                .ok_or_else(|| ApiError::Internal("admin token hash collision".into()))?;
            record_audit(
                conn,
                actor,
                "admin_token.create",
                "admin_token",
                row.id.to_string(),
                serde_json::json!({"name": row.name, "scopes": row.scopes, "expires_at": row.expires_at}),
            )
            .await?;
            Ok::<_, ApiError>(row)
        })
        .instrument(storage::postgres::transaction_span("admin_tokens::create"))
        .await?;
    Ok((token, row))
}

pub async fn list(
    state: &AppState,
    after: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<AdminTokenRow>, ApiError> {
    let mut conn = state.conn().await?;
    Ok(admin_tokens::list(&mut conn, after, fetch).await?)
}

/// Deletes a token; it is refused from the next request on.
pub async fn delete(state: &AppState, actor: &str, id: Uuid) -> Result<(), ApiError> {
    let mut conn = state.conn().await?;
    conn.transaction(async |conn| {
        let row = admin_tokens::soft_delete(conn, id)
            .await?
            .ok_or(ApiError::NotFound("admin token"))?;
        record_audit(
            conn,
            actor,
            "admin_token.delete",
            "admin_token",
            id.to_string(),
            serde_json::json!({"name": row.name}),
        )
        .await?;
        Ok(())
    })
    .instrument(storage::postgres::transaction_span("admin_tokens::delete"))
    .await
}
