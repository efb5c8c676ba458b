//! limiter: the per-request hot path. Validates a key and runs all its limits in one atomic
//! Lua script on the Redis Cluster.

mod settings;

use std::sync::Arc;

use service_kit::health::Readiness;
use settings::{Cli, Command};
use storage::rabbitmq::{RabbitLink, Topology};
use storage::redis_cluster::RedisCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = service_kit::settings::parse_or_exit();
    service_kit::logging::init(&cli.log.log, cli.log.log_format);
    let Command::Serve(args) = cli.command;
    let redis = RedisCluster::new(args.redis.settings())?;
    let rabbit = Arc::new(RabbitLink::new(
        args.amqp.settings(),
        "limiter",
        Topology::default(),
    ));
    let readiness = Readiness::new().with_redis(redis).with_rabbitmq(rabbit);
    service_kit::server::serve("limiter", args.listen, readiness, |_| {}).await?;
    Ok(())
}
