//! The Prometheus recorder (one per process) and HTTP request metrics.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// How often recorded histogram samples are folded into their buckets. The recorder keeps
/// every sample until then: without this, a process nobody scrapes grows by a few bytes per
/// request for ever (measured: about 23 bytes per check on the limiter).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global recorder on first call and returns the handle `/metrics` renders.
pub fn install(service: &'static str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .add_global_label("service", service)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS);
            let handle = match builder {
                Ok(builder) => {
                    let recorder = builder.build_recorder();
                    let handle = recorder.handle();
                    // Another recorder may already be installed (tests start several apps
                    // in one process); the handle still renders this one's metrics.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// A plain thread, so upkeep runs whichever runtime (or none) the caller is on.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "no metrics upkeep thread: histograms are drained only when /metrics is scraped");
    }
}

/// The handles of one (route, method, status), made once per worker thread: a request then
/// costs two atomic operations instead of two registry lookups that hash names and labels.
/// Bounded: routes are patterns (or "unmatched"), methods are the standard ones or "other".
type RequestHandles = HashMap<(String, &'static str, u16), (Counter, Histogram)>;

thread_local! {
    static HANDLES: RefCell<RequestHandles> = RefCell::new(HashMap::new());
}

/// Counts requests by route pattern (not by raw path, so ids do not explode the series),
/// method and status, and records their duration.
pub async fn record_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    HANDLES.with_borrow_mut(|handles| {
        let (requests, duration) = handles
            .entry((route, method, status))
            .or_insert_with_key(|(route, method, status)| {
                (
                    metrics::counter!("keymeter_http_requests_total", "route" => route.clone(), "method" => *method, "status" => status.to_string()),
                    metrics::histogram!("keymeter_http_request_duration_seconds", "route" => route.clone()),
                )
            });
        requests.increment(1);
        duration.record(elapsed);
    });
    Ok(response)
}

/// A client can send any token as a method; only the standard ones get a series of their own.
pub(crate) fn method_label(method: &Method) -> &'static str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::PATCH,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|standard| *standard == method)
        .map_or("other", |standard| standard.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_are_their_own_label_and_the_rest_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let made_up = Method::from_bytes(b"FROBNICATE").expect("a valid token");
        assert_eq!(method_label(&made_up), "other");
    }
}
