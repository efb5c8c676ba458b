use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use service_kit::settings::{AmqpArgs, LogArgs, PepperArgs, RedisArgs};

#[derive(Parser, Debug)]
#[command(
    name = "limiter",
    version,
    about = "keymeter's per-request key and limit check"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve POST /v1/check and GET /v1/authorize.
    Serve(Box<ServeArgs>),
}

/// What a check answers when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicy {
    /// Let the request through, flagged with `X-Keymeter-Degraded` and a metric.
    Open,
    /// Refuse it with 503 `UNAVAILABLE`.
    Closed,
}

/// How `/v1/authorize` refuses, for gateways that only pass some statuses on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DenyStatus {
    /// 401 for key problems, 429 for limits (as `/v1/check`).
    Native,
    /// 403 for those (nginx `auth_request` passes only 401 and 403 on); a store outage
    /// stays 503, as a 403 would blame the key.
    Forbidden,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address the check API listens on.
    #[arg(
        long = "listen",
        env = "KEYMETER_LIMITER_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// Answer when Redis is unreachable: `open` (allow, flagged) or `closed` (503).
    #[arg(
        long = "failure-policy",
        env = "KEYMETER_FAILURE_POLICY",
        default_value = "open"
    )]
    pub failure_policy: FailurePolicy,
    /// How `/v1/authorize` refuses: `native` (401/429) or `forbidden` (403 for those, for
    /// nginx; an outage stays 503).
    #[arg(
        long = "authorize-deny-status",
        env = "KEYMETER_AUTHORIZE_DENY_STATUS",
        default_value = "native"
    )]
    pub authorize_deny_status: DenyStatus,
    /// Keys kept in the in-process cache.
    #[arg(
        long = "cache-capacity",
        env = "KEYMETER_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    pub cache_capacity: u64,
    /// How long a key's record is trusted without asking Redis: the longest a change
    /// (revocation included) can take to reach this instance.
    #[arg(long = "cache-ttl-ms", env = "KEYMETER_CACHE_TTL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub cache_ttl_ms: u64,
    /// How long "no such key" is remembered.
    #[arg(long = "negative-cache-ttl-ms", env = "KEYMETER_NEGATIVE_CACHE_TTL_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub negative_cache_ttl_ms: u64,
    /// How often counted usage is published to RabbitMQ.
    #[arg(long = "usage-flush-ms", env = "KEYMETER_USAGE_FLUSH_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub usage_flush_ms: u64,
    /// Most usage entries kept while RabbitMQ is away; past it the oldest are dropped
    /// (counted in keymeter_usage_entries_dropped_total).
    #[arg(
        long = "usage-max-entries",
        env = "KEYMETER_USAGE_MAX_ENTRIES",
        default_value_t = 1_000_000
    )]
    pub usage_max_entries: usize,
    /// This instance's name in usage batches (default: limiter-<pid>).
    #[arg(long = "instance", env = "KEYMETER_INSTANCE")]
    pub instance: Option<String>,
    /// HTTP worker threads (default: one per CPU).
    #[arg(long = "http-workers", env = "KEYMETER_HTTP_WORKERS",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub http_workers: Option<u64>,
    /// Check-script calls one key may have in flight at once from one HTTP worker (so a
    /// process has up to workers × this); checks of the key that arrive past that wait and
    /// go together in the next call. 0: no batching, every check makes its own call.
    #[arg(long = "check-calls-per-key", env = "KEYMETER_CHECK_CALLS_PER_KEY", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub check_calls_per_key: u64,
    /// Most checks of one key judged by one script call.
    #[arg(long = "check-batch-max", env = "KEYMETER_CHECK_BATCH_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub check_batch_max: u64,
    /// Redis failures in a row that open the circuit breaker. Concurrent misses of one key
    /// share one Redis read, so one failure may stand for many waiting checks.
    #[arg(
        long = "breaker-threshold",
        env = "KEYMETER_BREAKER_THRESHOLD",
        default_value_t = 2
    )]
    pub breaker_threshold: u32,
    /// How long the open breaker answers by the failure policy before probing Redis again.
    #[arg(
        long = "breaker-cool-down-ms",
        env = "KEYMETER_BREAKER_COOL_DOWN_MS",
        default_value_t = 1000
    )]
    pub breaker_cool_down_ms: u64,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub pepper: PepperArgs,
}

impl ServeArgs {
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cache_ttl_ms)
    }

    pub fn negative_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.negative_cache_ttl_ms)
    }
}
