use std::sync::Arc;

use limiter::check::Checker;
use limiter::key_cache::KeyCache;
use limiter::settings::{Cli, Command};
use service_kit::health::Readiness;
use storage::rabbitmq::RabbitLink;
use storage::redis_cluster::RedisCluster;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = service_kit::settings::parse_or_exit();
    service_kit::logging::init(&cli.log.log, cli.log.log_format);
    let Command::Serve(args) = cli.command;
    let redis = RedisCluster::new(args.redis.settings())?;
    let rabbit = Arc::new(RabbitLink::new(
        args.amqp.settings(),
        "limiter",
        args.amqp.topology(),
    ));
    let keys = Arc::new(KeyCache::new(
        args.cache_capacity,
        args.cache_ttl(),
        args.negative_cache_ttl(),
    ));
    let checker = Arc::new(Checker {
        redis: redis.clone(),
        layout: args.redis.layout(),
        pepper: args.pepper.pepper.clone(),
        keys: Arc::clone(&keys),
        failure_policy: args.failure_policy,
    });
    let shutdown = CancellationToken::new();
    let events = tokio::spawn(limiter::invalidation::run(
        Arc::clone(&rabbit),
        keys,
        shutdown.clone(),
    ));
    let readiness = Readiness::new().with_redis(redis).with_rabbitmq(rabbit);
    let served = service_kit::server::serve(
        "limiter",
        args.listen,
        readiness,
        limiter::routes::configure(checker, args.authorize_deny_status),
    )
    .await;
    shutdown.cancel();
    let _ = events.await;
    served?;
    Ok(())
}
