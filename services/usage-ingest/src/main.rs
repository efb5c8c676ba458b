//! usage-ingest: consumes usage batches from RabbitMQ into partitioned Postgres tables.

mod settings;

use std::sync::Arc;

use service_kit::health::Readiness;
use settings::{Cli, Command};
use storage::rabbitmq::{RabbitLink, Topology};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = service_kit::settings::parse_or_exit();
    service_kit::logging::init(&cli.log.log, cli.log.log_format);
    let Command::Serve(args) = cli.command;
    let pool = storage::postgres::connect_pool(&args.database.settings())?;
    let rabbit = Arc::new(RabbitLink::new(
        args.amqp.settings(),
        "usage-ingest",
        Topology::default(),
    ));
    let readiness = Readiness::new().with_postgres(pool).with_rabbitmq(rabbit);
    service_kit::server::serve("usage-ingest", args.listen, readiness, |_| {}).await?;
    Ok(())
}
