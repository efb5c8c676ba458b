use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use service_kit::settings::{AmqpArgs, DatabaseArgs, LogArgs};

use crate::upkeep::UpkeepSettings;
use crate::worker::WorkerSettings;

#[derive(Parser, Debug)]
#[command(name = "usage-ingest", version, about = "keymeter's usage consumer")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Consume usage batches into Postgres, keep the partitions, and serve health,
    /// readiness and metrics.
    Serve(Box<ServeArgs>),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the health, readiness and metrics routes.
    #[arg(
        long = "listen",
        env = "KEYMETER_INGEST_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Unacked batches RabbitMQ may send ahead of the worker. They are all in memory at
    /// once: a full batch (10 000 entries) is about 1.2 MB of JSON.
    #[arg(long, env = "KEYMETER_INGEST_PREFETCH", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Most batches counted in one Postgres transaction.
    #[arg(long, env = "KEYMETER_INGEST_MAX_BATCHES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_batches: u64,
    /// How long the worker waits for more batches once one arrived (milliseconds).
    #[arg(long, env = "KEYMETER_INGEST_LINGER_MS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub linger_ms: u64,
    /// How long a batch id is remembered (hours). A batch made longer ago than this is
    /// dead-lettered as `too_old` rather than risk counting it twice.
    #[arg(long, env = "KEYMETER_INGEST_DEDUP_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub dedup_hours: u64,
    /// Daily partitions of usage_logs created ahead of today.
    #[arg(long, env = "KEYMETER_USAGE_PARTITIONS_AHEAD", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=366))]
    pub partitions_ahead: u32,
    /// Days of usage kept; older daily partitions are dropped.
    #[arg(long, env = "KEYMETER_USAGE_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..=36_600))]
    pub retention_days: u32,
    /// How often the partition upkeep runs (seconds).
    #[arg(long, env = "KEYMETER_USAGE_UPKEEP_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub upkeep_secs: u64,
}

impl ServeArgs {
    pub fn worker(&self) -> WorkerSettings {
        WorkerSettings {
            prefetch: self.prefetch,
            max_batches: usize::try_from(self.max_batches).unwrap_or(64),
            linger: Duration::from_millis(self.linger_ms),
            dedup_window: self.dedup_window(),
            consumer_tag: format!("usage-ingest-{}", std::process::id()),
        }
    }

    pub fn upkeep(&self) -> UpkeepSettings {
        UpkeepSettings {
            days_ahead: self.partitions_ahead,
            retention_days: self.retention_days,
            dedup_window: self.dedup_window(),
            interval: Duration::from_secs(self.upkeep_secs),
        }
    }

    fn dedup_window(&self) -> Duration {
        Duration::from_secs(self.dedup_hours.saturating_mul(3600))
    }
}
