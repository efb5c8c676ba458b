use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use service_kit::settings::{AmqpArgs, DatabaseArgs, LogArgs};

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
    /// Run the worker (for now: health, readiness and metrics only).
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
}
