//! Queries, one module per table. Each takes `&mut AsyncPgConnection`, so a caller can run
//! several in one transaction (a change, its audit entry and its outbox row).

pub mod admin_tokens;
pub mod api_keys;
pub mod audit;
pub mod outbox;
pub mod plans;
pub mod usage;

/// The most rows one list page returns.
pub const MAX_PAGE: i64 = 100;
