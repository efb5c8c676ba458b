//! Admin tokens that come from outside the API: the bootstrap token from the environment and
//! `key-admin token create`.

use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain::{Pepper, Scope};
use storage::models::{NewAdminToken, NewAuditEntry};
use storage::repositories::{admin_tokens, audit};
use tracing::Instrument;
use uuid::Uuid;

/// Stores the token's hash with its scopes and an audit entry, in one transaction. `None`
/// when a token with the same hash exists already (it is left as it is, even if deleted).
pub async fn store_admin_token(
    conn: &mut AsyncPgConnection,
    pepper: &Pepper,
    token: &str,
    name: &str,
    scopes: &[Scope],
    actor: &str,
) -> Result<Option<Uuid>, diesel::result::Error> {
    let new = NewAdminToken {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        token_hash: pepper.hash_admin_token(token).into_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        expires_at: None,
    };
    conn.transaction(async |conn| {
        let Some(row) = admin_tokens::insert_if_absent(conn, &new).await? else {
            return Ok(None);
        };
        audit::record(
            conn,
            &NewAuditEntry {
                actor: actor.to_owned(),
                action: "admin_token.create".to_owned(),
                target_type: "admin_token".to_owned(),
                target_id: row.id.to_string(),
                changes: serde_json::json!({"name": row.name, "scopes": row.scopes}),
            },
        )
        .await?;
        Ok(Some(row.id))
    })
    .instrument(storage::postgres::transaction_span(
        "bootstrap::store_admin_token",
    ))
    .await
}

/// Makes sure the bootstrap token exists with scope `admin`.
async fn ensure_bootstrap_token(
    pool: &storage::postgres::PgPool,
    pepper: &Pepper,
    token: &str,
) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    match store_admin_token(
        &mut conn,
        pepper,
        token,
        "bootstrap",
        &[Scope::Admin],
        "bootstrap",
    )
    .await?
    {
        Some(id) => tracing::info!(%id, "stored the bootstrap admin token"),
        None => tracing::debug!("bootstrap admin token already stored"),
    }
    Ok(())
}

/// Stores the bootstrap token in the background, retrying while Postgres is unreachable, so
/// key-admin can start before its database.
pub fn spawn_bootstrap(pool: storage::postgres::PgPool, pepper: Pepper, token: String) {
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(500);
        while let Err(error) = ensure_bootstrap_token(&pool, &pepper, &token).await {
            tracing::warn!(%error, retry_in = ?delay, "could not store the bootstrap admin token yet");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(30));
        }
    });
}
