use actix_web::{post, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AdminOnly, Authorized};
use crate::error::{ApiError, Problem};
use crate::operations::record_audit;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct ResyncResult {
    /// Keys written to the projection (deleted keys are removed, not counted).
    pub keys: u64,
    pub plans: u64,
}

/// Rebuild the Redis projection of every key and plan from Postgres.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, body = ResyncResult),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres or Redis unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = ["admin"]))
)]
#[post("/ops/resync")]
pub async fn resync(
    auth: Authorized<AdminOnly>,
    state: web::Data<AppState>,
) -> Result<web::Json<ResyncResult>, ApiError> {
    let counts = state
        .relay
        .resync()
        .await
        .map_err(|e| ApiError::Unavailable(format!("resync failed: {e}")))?;
    let mut conn = state.conn().await?;
    record_audit(
        &mut conn,
        &auth.actor(),
        "projection.resync",
        "projection",
        "redis".into(),
        serde_json::json!({"keys": counts.keys, "plans": counts.plans}),
    )
    .await?;
    Ok(web::Json(ResyncResult {
        keys: counts.keys,
        plans: counts.plans,
    }))
}
