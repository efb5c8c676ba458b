use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
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
    /// Serve the check API (for now: health, readiness and metrics only).
    Serve(Box<ServeArgs>),
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
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub pepper: PepperArgs,
}
