use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ResourceDef;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use service_kit::health::Readiness;
use storage::rabbitmq::RabbitLink;
use storage::redis_cluster::RedisCluster;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bootstrap;
use crate::error::ApiError;
use crate::reconcile::Reconciler;
use crate::relay::Relay;

/// How far back credits are reconciled, and how long Redis keeps the per-minute spend.
const RECONCILE_WINDOW: Duration = Duration::from_secs(24 * 3600);
use crate::routes;
use crate::settings::ServeArgs;
use crate::state::AppState;

/// The whole admin app (everything but health and metrics) for one shared state.
pub fn app(
    state: AppState,
) -> anyhow::Result<impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static> {
    let openapi = routes::openapi::document();
    // Known paths answer 405 to other methods; anything else is 404.
    let known_paths: Vec<KnownPath> = openapi
        .paths
        .paths
        .iter()
        .map(|(path, item)| KnownPath {
            pattern: ResourceDef::new(path.as_str()),
            allow: allowed_methods(item),
        })
        .collect();
    let known_paths = web::Data::new(known_paths);
    let document = web::Data::new(serde_json::to_string(&openapi)?);
    let state = web::Data::new(state);
    Ok(move |config: &mut web::ServiceConfig| {
        config
            .app_data(state.clone())
            .app_data(document.clone())
            .app_data(known_paths.clone())
            .route(
                "/openapi.json",
                web::get().to(routes::openapi::serve_document),
            )
            .default_service(web::to(unmatched));
        routes::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
            config,
        ));
    })
}

/// A documented path and the methods it takes, for 405 answers with `Allow`.
struct KnownPath {
    pattern: ResourceDef,
    allow: String,
}

fn allowed_methods(item: &utoipa::openapi::PathItem) -> String {
    [
        ("GET", item.get.is_some()),
        ("POST", item.post.is_some()),
        ("PATCH", item.patch.is_some()),
        ("PUT", item.put.is_some()),
        ("DELETE", item.delete.is_some()),
    ]
    .iter()
    .filter(|(_, present)| *present)
    .map(|(method, _)| *method)
    .collect::<Vec<_>>()
    .join(", ")
}

async fn unmatched(request: HttpRequest, known_paths: web::Data<Vec<KnownPath>>) -> HttpResponse {
    match known_paths
        .iter()
        .find(|p| p.pattern.is_match(request.path()))
    {
        Some(known) => {
            let mut response = ApiError::MethodNotAllowed.error_response();
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&known.allow) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::ALLOW, value);
            }
            response
        }
        None => ApiError::NotFound("route").error_response(),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let pool = storage::postgres::connect_pool(&args.database.settings())?;
    let redis = RedisCluster::new(args.redis.settings())?;
    let rabbit = Arc::new(RabbitLink::new(
        args.amqp.settings(),
        "key-admin",
        args.amqp.topology(),
    ));
    if let Some(token) = args.bootstrap_admin_token.clone() {
        bootstrap::spawn_bootstrap(pool.clone(), args.pepper.pepper.clone(), token);
    }

    let wakeup = Arc::new(Notify::new());
    let mut relay = Relay::new(
        pool.clone(),
        redis.clone(),
        args.redis.layout(),
        Arc::clone(&rabbit),
        Arc::clone(&wakeup),
    );
    relay.outbox_retention = (args.outbox_retention_days > 0)
        .then(|| Duration::from_secs(args.outbox_retention_days.saturating_mul(86_400)));
    let relay = Arc::new(relay);
    let state = AppState {
        pool: pool.clone(),
        redis: redis.clone(),
        layout: args.redis.layout(),
        pepper: args.pepper.pepper.clone(),
        relay_wakeup: wakeup,
        relay: Arc::clone(&relay),
        usage_query_timeout: Duration::from_millis(args.usage_query_timeout_ms),
    };
    let shutdown = CancellationToken::new();
    let relay_task = tokio::spawn(Arc::clone(&relay).run(shutdown.clone()));
    let prune_task = tokio::spawn(Arc::clone(&relay).run_pruning(shutdown.clone()));
    // Turned off, the passes still prune what the check script records, hourly.
    let compare = args.reconcile_secs > 0;
    let reconcile_every = Duration::from_secs(if compare { args.reconcile_secs } else { 3600 });
    let reconciler = Arc::new(Reconciler {
        pool: pool.clone(),
        redis: redis.clone(),
        layout: args.redis.layout(),
        settle: Duration::from_secs(args.reconcile_settle_secs),
        window: RECONCILE_WINDOW,
        compare,
    });
    let reconcile_task = tokio::spawn(reconciler.run(reconcile_every, shutdown.clone()));

    let readiness = Readiness::new()
        .with_postgres(pool)
        .with_redis(redis)
        .with_rabbitmq(rabbit);
    let served = service_kit::server::serve("key-admin", args.listen, readiness, app(state)?).await;
    // The HTTP server has drained; let the relay finish the step in hand.
    shutdown.cancel();
    let _ = relay_task.await;
    let _ = prune_task.await;
    let _ = reconcile_task.await;
    served?;
    Ok(())
}
