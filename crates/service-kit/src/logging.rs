//! Structured logs through `tracing`, as text for people or JSON for collectors, and
//! OpenTelemetry traces when an OTLP endpoint is configured (see `telemetry`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::telemetry::{self, Telemetry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber: logs filtered by `filter`, plus the OpenTelemetry layer
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A second call (tests) leaves the first in
/// place. Keep the returned handle and call `shutdown` before exiting, so the last spans
/// are sent.
pub fn init(service: &'static str, filter: &str, format: LogFormat) -> Telemetry {
    // Store-call spans are for traces only; they would only clutter the logs. The request
    // span (built only when tracing is on) is always seen, so log lines carry its trace id.
    let always = format!(
        "{}=off,{}=info",
        storage::SPAN_TARGET,
        telemetry::REQUEST_TARGET
    );
    let log_filter = EnvFilter::try_new(format!("{filter},{always}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{always}")));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        // The current span's fields go with each line: the request span carries `trace_id`.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
    .with_filter(log_filter);
    let (telemetry, traces) = telemetry::from_environment(service);
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    telemetry
}
