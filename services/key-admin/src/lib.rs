//! key-admin: the admin REST API over PostgreSQL, the source of truth, and the outbox relay
//! that projects it into Redis and announces changes on RabbitMQ.

pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod commands;
pub mod error;
pub mod operations;
pub mod pagination;
pub mod reconcile;
pub mod relay;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod state;
