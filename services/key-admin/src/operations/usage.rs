//! Usage analytics: the buckets of `usage_logs` for one key, an owner or a plan.

use chrono::{DateTime, Datelike, Duration, Utc};
use storage::postgres::PgConn;
use storage::repositories::api_keys;
use storage::repositories::usage::{self, Granularity, UsageBucket, UsageScope};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Most buckets one answer may hold: a month of minutes.
pub const MAX_BUCKETS: i64 = 31 * 24 * 60;

/// The years a range may touch: usage is stamped with a real clock.
const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// The time range asked for, checked: within the years 1970 to 9999, `from` before `to`,
/// and not more buckets than `MAX_BUCKETS`. Without `to` it ends now; without `from` it
/// starts a day before `to`.
pub fn range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    granularity: Granularity,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    for (field, at) in [("from", from), ("to", to)] {
        if at.is_some_and(|at| !YEARS.contains(&at.year())) {
            return Err(ApiError::field(
                field,
                "must be within the years 1970 to 9999",
            ));
        }
    }
    let to = to.unwrap_or_else(Utc::now);
    let from = match from {
        Some(from) => from,
        None => to
            .checked_sub_signed(Duration::days(1))
            .ok_or_else(|| ApiError::field("to", "too early for a default `from`"))?,
    };
    if from >= to {
        return Err(ApiError::field("from", "must be before `to`"));
    }
    let width = match granularity {
        Granularity::Minute => 60,
        Granularity::Hour => 3600,
        Granularity::Day => 86_400,
    };
    // Buckets start at `from` rounded down to the granularity and end at `to`.
    let first = from.timestamp() - from.timestamp().rem_euclid(width);
    let buckets = (to.timestamp() - first + width - 1) / width;
    if buckets > MAX_BUCKETS {
        return Err(ApiError::field(
            "to",
            format!("the range holds {buckets} buckets of this granularity; at most {MAX_BUCKETS}"),
        ));
    }
    Ok((from, to))
}

/// A usage query cancelled by its statement timeout is the asker's to narrow. (PostgreSQL
/// names the cause only in its message; with messages in another language this is a 500.)
fn out_of_time(error: diesel::result::Error) -> ApiError {
    match &error {
        diesel::result::Error::DatabaseError(_, info)
            if info
                .message()
                .contains("canceling statement due to statement timeout") =>
        {
            ApiError::Unavailable(
                "the usage query ran out of time: ask for a shorter range, a coarser \
                 granularity or fewer keys"
                    .into(),
            )
        }
        _ => error.into(),
    }
}

/// One key's usage; a deleted key's history stays readable.
pub async fn of_key(
    state: &AppState,
    key_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
) -> Result<Vec<UsageBucket>, ApiError> {
    let mut conn = state.conn().await?;
    api_keys::get_any(&mut conn, key_id)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    read(
        &mut conn,
        state,
        UsageScope::Key(key_id),
        from,
        to,
        granularity,
    )
    .await
}

/// The usage of every key (deleted ones included) of an owner or a plan, summed.
pub async fn of_scope(
    state: &AppState,
    scope: UsageScope<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
) -> Result<Vec<UsageBucket>, ApiError> {
    let mut conn = state.conn().await?;
    read(&mut conn, state, scope, from, to, granularity).await
}

/// The buckets, within the usage query timeout.
async fn read(
    conn: &mut PgConn,
    state: &AppState,
    scope: UsageScope<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
) -> Result<Vec<UsageBucket>, ApiError> {
    let timeout = state.usage_query_timeout;
    usage::buckets(conn, scope, from, to, granularity, timeout)
        .await
        .map_err(out_of_time)
}
