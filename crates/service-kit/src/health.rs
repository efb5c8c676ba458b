//! `/healthz` (the process lives), `/readyz` (every store it needs answers) and `/metrics`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Whether a failing check makes the service unready, or only degraded (still ready: it
/// can do its work without that store, e.g. the limiter keeps answering checks while
/// RabbitMQ is away and holds usage until it is back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// The stores a service depends on, each with a check that answers quickly.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Need, Check)>,
    timeout: Option<Duration>,
}

#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub status: &'static str,
    /// The required stores that did not answer, by name: the service is not ready.
    pub failing: Vec<&'static str>,
    /// The optional stores that did not answer: the service is ready but degraded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<&'static str>,
    pub checks: BTreeMap<&'static str, String>,
}

const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn with_check<F, Fut, E>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let check = Arc::new(move || -> CheckFuture {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        self.checks.push((name, Need::Required, check));
        self
    }

    /// Turns the check added last into an optional one: reported, but the service stays
    /// ready when it fails.
    pub fn optional(mut self) -> Self {
        if let Some(last) = self.checks.last_mut() {
            last.1 = Need::Optional;
        }
        self
    }

    pub fn with_postgres(self, pool: storage::postgres::PgPool) -> Self {
        self.with_check("postgres", move || {
            let pool = pool.clone();
            async move { storage::postgres::ping(&pool).await }
        })
    }

    pub fn with_redis(self, cluster: storage::redis_cluster::RedisCluster) -> Self {
        self.with_check("redis", move || {
            let cluster = cluster.clone();
            async move { cluster.ping().await }
        })
    }

    /// Ready when a connection is open, or can be opened now (which also re-declares the
    /// topology on a broker that lost it).
    pub fn with_rabbitmq(self, link: Arc<storage::rabbitmq::RabbitLink>) -> Self {
        self.with_check("rabbitmq", move || {
            let link = Arc::clone(&link);
            async move { link.connection().await.map(drop) }
        })
    }

    /// Runs every check at once, each bounded by the timeout.
    pub async fn evaluate(&self) -> ReadinessReport {
        let timeout = self.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT);
        let results =
            futures_util::future::join_all(self.checks.iter().map(|(name, need, check)| {
                let fut = check();
                async move {
                    let outcome = match tokio::time::timeout(timeout, fut).await {
                        Ok(result) => result,
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    };
                    (*name, *need, outcome)
                }
            }))
            .await;
        let mut report = ReadinessReport {
            status: "ready",
            failing: Vec::new(),
            degraded: Vec::new(),
            checks: BTreeMap::new(),
        };
        for (name, need, outcome) in results {
            match outcome {
                Ok(()) => {
                    report.checks.insert(name, "ok".to_owned());
                }
                Err(error) => {
                    match need {
                        Need::Required => report.failing.push(name),
                        Need::Optional => report.degraded.push(name),
                    }
                    report.checks.insert(name, error);
                }
            }
        }
        report.status = if !report.failing.is_empty() {
            "unavailable"
        } else if !report.degraded.is_empty() {
            "degraded"
        } else {
            "ready"
        };
        report
    }
}

/// Registers the three routes; the app must hold `web::Data<Readiness>` and
/// `web::Data<PrometheusHandle>`.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let report = readiness.evaluate().await;
    if report.failing.is_empty() {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    }
}

async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, test};

    fn app_data() -> (web::Data<Readiness>, web::Data<PrometheusHandle>) {
        let readiness = Readiness::new()
            .with_check("postgres", || async { Ok::<(), String>(()) })
            .with_check("redis", || async { Err::<(), _>("connection refused") })
            .with_check("rabbitmq", || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<(), String>(())
            })
            .with_timeout(Duration::from_millis(50));
        (
            web::Data::new(readiness),
            web::Data::new(crate::metrics::install("test")),
        )
    }

    #[actix_web::test]
    async fn readyz_names_each_store_that_does_not_answer() {
        let (readiness, handle) = app_data();
        let app = test::init_service(
            App::new()
                .app_data(readiness)
                .app_data(handle)
                .configure(routes),
        )
        .await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["failing"], serde_json::json!(["redis", "rabbitmq"]));
        assert_eq!(body["checks"]["postgres"], "ok");
        assert_eq!(body["checks"]["redis"], "connection refused");

        let health =
            test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(health.status(), 200);
    }

    #[actix_web::test]
    async fn an_optional_store_that_fails_leaves_the_service_ready_but_degraded() {
        let readiness = Readiness::new()
            .with_check("redis", || async { Ok::<(), String>(()) })
            .with_check("rabbitmq", || async { Err::<(), _>("connection refused") })
            .optional();
        let report = readiness.evaluate().await;
        assert_eq!(report.status, "degraded");
        assert!(report.failing.is_empty());
        assert_eq!(report.degraded, vec!["rabbitmq"]);
        assert_eq!(report.checks["rabbitmq"], "connection refused");
    }

    #[actix_web::test]
    async fn readyz_is_200_when_all_answer_and_metrics_render() {
        let readiness = Readiness::new().with_check("postgres", || async { Ok::<(), String>(()) });
        let handle = crate::metrics::install("test");
        metrics::counter!("keymeter_test_total").increment(1);
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(readiness))
                .app_data(web::Data::new(handle))
                .configure(routes),
        )
        .await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(response.status(), 200);
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
        let text = String::from_utf8(test::read_body(response).await.to_vec()).expect("utf-8");
        assert!(text.contains("keymeter_test_total"), "{text}");
    }
}
