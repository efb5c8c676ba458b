//! What every keymeter service starts with: typed settings from flags and `KEYMETER_*`
//! variables, structured logs, OpenTelemetry traces, Prometheus metrics, and the `/healthz`, `/readyz` and
//! `/metrics` routes.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod telemetry;
