//! Every I/O adapter of keymeter: PostgreSQL through diesel-async, the Redis Cluster through
//! deadpool-redis with its Lua scripts, and RabbitMQ through lapin. Services call these and
//! never write SQL, Redis commands or AMQP frames themselves.

/// The `tracing` target of the spans around store calls (Postgres transactions, Redis
/// scripts, RabbitMQ publishes and consumes). Only the OpenTelemetry layer enables it, so
/// with tracing off these spans are never built.
pub const SPAN_TARGET: &str = "keymeter::span";

pub mod models;
pub mod postgres;
pub mod rabbitmq;
pub mod redis_cluster;
pub mod repositories;
pub mod schema;
