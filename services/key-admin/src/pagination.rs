//! `limit` and `cursor` of every list, and the `{items, next_cursor}` answer.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (empty means the first page).
    #[param(
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Checks `limit`; returns it with one extra row to fetch, which tells whether a next page exists.
pub fn page_size(limit: Option<u32>) -> Result<(usize, i64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    Ok((limit as usize, i64::from(limit) + 1))
}

/// Cursors over uuid-ordered lists are the last id seen.
pub fn uuid_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            Uuid::try_parse(c).map_err(|_| ApiError::field("cursor", "not a cursor of this list"))
        })
        .transpose()
}

/// Cuts the extra row off and makes the cursor from the last item kept.
pub fn finish<R, T>(
    mut rows: Vec<R>,
    limit: usize,
    cursor_of: impl Fn(&R) -> String,
    into_item: impl FnMut(R) -> T,
) -> Page<T> {
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor_of)
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(into_item).collect(),
        next_cursor,
    }
}
