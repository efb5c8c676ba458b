use std::sync::Arc;

use service_kit::health::Readiness;
use storage::rabbitmq::{RabbitLink, Topology};
use storage::redis_cluster::RedisCluster;

use crate::bootstrap;
use crate::settings::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let pool = storage::postgres::connect_pool(&args.database.settings())?;
    let redis = RedisCluster::new(args.redis.settings())?;
    let rabbit = Arc::new(RabbitLink::new(
        args.amqp.settings(),
        "key-admin",
        Topology::default(),
    ));

    if let Some(token) = args.bootstrap_admin_token.clone() {
        bootstrap::spawn_bootstrap(pool.clone(), args.pepper.pepper.clone(), token);
    }

    let readiness = Readiness::new()
        .with_postgres(pool)
        .with_redis(redis)
        .with_rabbitmq(rabbit);
    service_kit::server::serve("key-admin", args.listen, readiness, |_| {}).await?;
    Ok(())
}
