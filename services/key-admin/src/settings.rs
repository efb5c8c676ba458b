use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use domain::Scope;
use service_kit::settings::{AmqpArgs, DatabaseArgs, LogArgs, PepperArgs, RedisArgs};

#[derive(Parser, Debug)]
#[command(name = "key-admin", version, about = "keymeter's admin API")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the admin API.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations that are not applied yet.
    Migrate(MigrateArgs),
    /// Manage admin tokens from the command line.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address the admin API listens on.
    #[arg(
        long = "listen",
        env = "KEYMETER_ADMIN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// An operator-chosen secret (at least 32 characters) stored hashed as an `admin` token
    /// at start-up, unless a token with that hash exists already.
    #[arg(long = "bootstrap-admin-token", env = "KEYMETER_BOOTSTRAP_ADMIN_TOKEN",
          value_parser = bootstrap_token, hide_env_values = true)]
    pub bootstrap_admin_token: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub pepper: PepperArgs,
    /// How often credits spent in Redis are compared with the cost counted in Postgres
    /// (seconds; 0 turns the reconciliation off).
    #[arg(long, env = "KEYMETER_RECONCILE_SECS", default_value_t = 60)]
    pub reconcile_secs: u64,
    /// Minutes younger than this are not compared yet: their usage may still be on its way
    /// through RabbitMQ (seconds).
    #[arg(long, env = "KEYMETER_RECONCILE_SETTLE_SECS", default_value_t = 120)]
    pub reconcile_settle_secs: u64,
    /// How long PostgreSQL may spend on one usage analytics query before it is cancelled
    /// and the request answered 503 (milliseconds).
    #[arg(long, env = "KEYMETER_USAGE_QUERY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub usage_query_timeout_ms: u64,
    /// How long an outbox row is kept after its key event went out (days; 0 keeps them all).
    /// The audit log, not the outbox, is the lasting record of changes.
    #[arg(long, env = "KEYMETER_OUTBOX_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(0..=36_500))]
    pub outbox_retention_days: u64,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an admin token and print it once.
    Create(TokenCreateArgs),
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// A name that says who or what uses the token.
    #[arg(long)]
    pub name: String,
    /// Comma-separated scopes: plans:read, plans:write, keys:read, keys:write, usage:read,
    /// audit:read, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<Scope>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub pepper: PepperArgs,
}

fn bootstrap_token(text: &str) -> Result<String, String> {
    if text.chars().count() < domain::admin_token::MIN_BOOTSTRAP_TOKEN_LEN {
        return Err(format!(
            "must be at least {} characters",
            domain::admin_token::MIN_BOOTSTRAP_TOKEN_LEN
        ));
    }
    Ok(text.to_owned())
}
