//! Every I/O adapter of keymeter: PostgreSQL through diesel-async, the Redis Cluster through
//! deadpool-redis with its Lua scripts, and RabbitMQ through lapin. Services call these and
//! never write SQL, Redis commands or AMQP frames themselves.

pub mod models;
pub mod postgres;
pub mod rabbitmq;
pub mod redis_cluster;
pub mod repositories;
pub mod schema;
