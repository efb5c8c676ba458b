//! usage-ingest: consumes usage batches from RabbitMQ into partitioned Postgres tables,
//! counting each batch exactly once.

pub mod poison;
pub mod settings;
pub mod upkeep;
pub mod worker;
pub mod writer;
