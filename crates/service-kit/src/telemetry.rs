//! OpenTelemetry traces over OTLP/HTTP (protobuf), on when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and
//! `OTEL_SDK_DISABLED` is not `true`; the other `OTEL_*` variables (service name, batch
//! delay, headers, timeout) work as the OpenTelemetry SDK documents them.
//!
//! Off, nothing of it runs: the request middleware checks one flag, and the store-call
//! spans (target `keymeter::span`) are enabled by no layer, so `tracing` never builds them.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The target of the per-request server span.
pub const REQUEST_TARGET: &str = "keymeter::request";

/// Whether spans are exported (decided once at start-up).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Owns the tracer provider; `shutdown` sends what is still buffered.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("opentelemetry: could not send the last spans: {error}");
        }
    }
}

fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// The tracing layer that exports spans, when the environment asks for it.
pub fn from_environment<S>(service: &'static str) -> (Telemetry, Option<BoxedLayer<S>>)
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !configured() {
        return (Telemetry::default(), None);
    }
    // The blocking HTTP client must not be built on a runtime thread.
    let exporter = std::thread::spawn(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
    })
    .join();
    let exporter = match exporter {
        Ok(Ok(exporter)) => exporter,
        Ok(Err(error)) => {
            eprintln!("opentelemetry: no OTLP exporter ({error}); traces are off");
            return (Telemetry::default(), None);
        }
        Err(_) => {
            eprintln!("opentelemetry: building the OTLP exporter panicked; traces are off");
            return (Telemetry::default(), None);
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("keymeter"))
        .with_filter(
            Targets::new()
                .with_target(REQUEST_TARGET, LevelFilter::INFO)
                .with_target(storage::SPAN_TARGET, LevelFilter::INFO),
        )
        .boxed();
    ENABLED.store(true, Ordering::Relaxed);
    (
        Telemetry {
            provider: Some(provider),
        },
        Some(layer),
    )
}

/// Reads W3C `traceparent`/`tracestate` from actix's header map.
struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// One server span per request, child of the caller's `traceparent` when there is one;
/// its `trace_id` field puts the trace id on every log line written inside the request.
pub async fn trace_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !enabled() {
        return next.call(req).await;
    }
    // Named after the method alone until the route is known: a raw path or a made-up method
    // would give the trace backend a span name per URL.
    let (method, name) = match crate::metrics::method_label(req.method()) {
        "other" => ("_OTHER", "HTTP"),
        standard => (standard, standard),
    };
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(req.headers()))
    });
    let span = tracing::info_span!(
        target: REQUEST_TARGET,
        "http.request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        url.path = %req.path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    let response = next.call(req).instrument(span.clone()).await?;
    if let Some(route) = response.request().match_pattern() {
        // Through OpenTelemetry itself: the span was started above (for its trace id), and
        // tracing-opentelemetry applies a recorded `otel.name` only before that.
        span.context().span().update_name(format!("{name} {route}"));
        span.record("http.route", route);
    }
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    Ok(response)
}
