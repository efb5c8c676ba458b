use std::sync::Arc;

use service_kit::health::Readiness;
use storage::rabbitmq::RabbitLink;
use tokio_util::sync::CancellationToken;
use usage_ingest::settings::{Cli, Command};
use usage_ingest::writer::Writer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = service_kit::settings::parse_or_exit();
    let telemetry = service_kit::logging::init("usage-ingest", &cli.log.log, cli.log.log_format);
    let Command::Serve(args) = cli.command;
    let pool = storage::postgres::connect_pool(&args.database.settings())?;
    let rabbit = Arc::new(RabbitLink::new(
        args.amqp.settings(),
        "usage-ingest",
        args.amqp.topology(),
    ));
    let shutdown = CancellationToken::new();
    let upkeep = tokio::spawn(usage_ingest::upkeep::run(
        pool.clone(),
        args.upkeep(),
        shutdown.clone(),
    ));
    let worker = tokio::spawn(usage_ingest::worker::run(
        Arc::clone(&rabbit),
        Arc::new(Writer::new(pool.clone())),
        args.worker(),
        shutdown.clone(),
    ));
    // The worker returns only once told to stop. Ending before that is a panic, and a process
    // that still answers /readyz but counts nothing must not stay in its Service: exit, and
    // let the orchestrator start it again (the batches in hand were never acked).
    let worker = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let ended = worker.await;
            if !shutdown.is_cancelled() {
                tracing::error!(?ended, "the usage worker stopped on its own; exiting");
                std::process::exit(70);
            }
        })
    };
    let readiness = Readiness::new().with_postgres(pool).with_rabbitmq(rabbit);
    let served = service_kit::server::serve("usage-ingest", args.listen, readiness, |_| {}).await;
    // SIGTERM stopped the server; the worker counts and acks the batches in hand, then stops.
    shutdown.cancel();
    let _ = worker.await;
    let _ = upkeep.await;
    telemetry.shutdown();
    served?;
    Ok(())
}
