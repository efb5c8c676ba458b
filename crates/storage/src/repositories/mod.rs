//! Queries, one module per table. Each takes `&mut AsyncPgConnection`, so a caller can run
//! several in one transaction (a change, its audit entry and its outbox row).

pub mod admin_tokens;
pub mod audit;
