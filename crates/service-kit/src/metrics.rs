//! The Prometheus recorder (one per process) and HTTP request metrics.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets from 50 µs to 10 s: the limiter's answers live at the low end.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Installs the global recorder on first call and returns the handle `/metrics` renders.
pub fn install(service: &'static str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .add_global_label("service", service)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS);
            match builder {
                Ok(builder) => {
                    let recorder = builder.build_recorder();
                    let handle = recorder.handle();
                    // Another recorder may already be installed (tests start several apps
                    // in one process); the handle still renders this one's metrics.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The two series of one (route, method, status), kept as handles: after the first request
/// of a kind, counting one costs two atomic updates instead of label strings and two
/// registry lookups. The set is as small as the routes × methods × statuses answered.
#[derive(Clone)]
struct HttpSeries {
    requests: Counter,
    duration: Histogram,
}

type SeriesByRoute = HashMap<String, HashMap<(Method, u16), HttpSeries>>;

static HTTP_SERIES: LazyLock<RwLock<SeriesByRoute>> = LazyLock::new(Default::default);

fn http_series(route: &str, method: &Method, status: u16) -> HttpSeries {
    let key = (method.clone(), status);
    if let Ok(known) = HTTP_SERIES.read()
        && let Some(series) = known.get(route).and_then(|by| by.get(&key))
    {
        return series.clone();
    }
    let (route_label, method_label, status_label) = (
        route.to_owned(),
        method.as_str().to_owned(),
        status.to_string(),
    );
    let requests = metrics::counter!("keymeter_http_requests_total", "route" => route_label, "method" => method_label, "status" => status_label);
    let route_label = route.to_owned();
    let duration =
        metrics::histogram!("keymeter_http_request_duration_seconds", "route" => route_label);
    let series = HttpSeries { requests, duration };
    if let Ok(mut known) = HTTP_SERIES.write() {
        known
            .entry(route.to_owned())
            .or_default()
            .insert(key, series.clone());
    }
    series
}

/// Counts requests by route pattern (not by raw path, so ids do not explode the series),
/// method and status, and records their duration.
pub async fn record_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let response = next.call(req).await?;
    let route = response.request().match_pattern();
    let series = http_series(
        route.as_deref().unwrap_or("unmatched"),
        &method,
        response.status().as_u16(),
    );
    series.requests.increment(1);
    series.duration.record(started.elapsed().as_secs_f64());
    Ok(response)
}
