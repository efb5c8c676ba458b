//! The admin API in process, over real HTTP, against the real Postgres, Redis Cluster and
//! RabbitMQ, each test with its own schema, Redis prefix and exchange names.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod admin_tokens;
mod app;
mod audit;
mod keys;
mod openapi;
mod plans;
mod projection;
mod reconcile;
mod usage;

pub use app::TestApp;
