use std::sync::Arc;

use limiter::batching::CheckBatcher;
use limiter::breaker::Breaker;
use limiter::check::Checker;
use limiter::key_cache::KeyCache;
use limiter::settings::{Cli, Command};
use limiter::usage::{UsageAggregator, UsagePublisher};
use service_kit::health::Readiness;
use std::time::Duration;
use storage::rabbitmq::RabbitLink;
use storage::redis_cluster::RedisCluster;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = service_kit::settings::parse_or_exit();
    let telemetry = service_kit::logging::init("limiter", &cli.log.log, cli.log.log_format);
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
    let usage = Arc::new(UsageAggregator::default());
    let usage_publisher = Arc::new(UsagePublisher::new(
        Arc::clone(&usage),
        Arc::clone(&rabbit),
        args.instance
            .clone()
            .unwrap_or_else(|| format!("limiter-{}", std::process::id())),
        args.usage_max_entries,
    ));
    // A call may wait for a connection (up to four response timeouts), then its command.
    let breaker = Arc::new(
        Breaker::new(
            args.breaker_threshold,
            Duration::from_millis(args.breaker_cool_down_ms),
        )
        .with_probe_timeout(redis.settings().response_timeout * 5),
    );
    let batcher = Arc::new(CheckBatcher::new(
        redis.clone(),
        args.redis.layout(),
        Arc::clone(&breaker),
        usize::try_from(args.check_calls_per_key).unwrap_or(1),
        usize::try_from(args.check_batch_max).unwrap_or(1),
    ));
    let checker = Arc::new(Checker {
        redis: redis.clone(),
        layout: args.redis.layout(),
        pepper: args.pepper.pepper.clone(),
        keys: Arc::clone(&keys),
        batcher,
        failure_policy: args.failure_policy,
        usage,
        breaker,
    });
    let shutdown = CancellationToken::new();
    let events = tokio::spawn(limiter::invalidation::run(
        Arc::clone(&rabbit),
        keys,
        shutdown.clone(),
    ));
    let flusher = tokio::spawn(usage_publisher.run(
        Duration::from_millis(args.usage_flush_ms),
        Duration::from_secs(10),
        shutdown.clone(),
    ));
    // Without RabbitMQ checks go on and usage waits in the bounded aggregate, so a broker
    // outage degrades the limiter but does not take it out of its Service.
    let readiness = Readiness::new()
        .with_redis(redis)
        .with_rabbitmq(rabbit)
        .optional();
    let served = service_kit::server::serve_with_workers(
        "limiter",
        args.listen,
        args.http_workers.and_then(|n| usize::try_from(n).ok()),
        readiness,
        limiter::routes::configure(checker, args.authorize_deny_status),
    )
    .await;
    // The server has drained: no check is in flight, so the last flush has everything.
    shutdown.cancel();
    let _ = events.await;
    let _ = flusher.await;
    telemetry.shutdown();
    served?;
    Ok(())
}
