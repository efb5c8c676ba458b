//! The HTTP server every service runs: its own routes plus health and metrics, request
//! metrics, and a graceful stop on SIGTERM or SIGINT (actix handles both signals).

use std::net::SocketAddr;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::health::Readiness;

/// How long in-flight requests get to finish after SIGTERM.
pub const SHUTDOWN_GRACE_SECS: u64 = 20;

/// Binds the server (port 0 picks a free port) without running it; returns it with the
/// address it listens on.
pub fn bind<F>(
    service: &'static str,
    listen: SocketAddr,
    readiness: Readiness,
    routes: F,
) -> std::io::Result<(Server, SocketAddr)>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    bind_with_workers(service, listen, None, readiness, routes)
}

/// As `bind`, with `workers` HTTP worker threads (default: one per CPU).
pub fn bind_with_workers<F>(
    service: &'static str,
    listen: SocketAddr,
    workers: Option<usize>,
    readiness: Readiness,
    routes: F,
) -> std::io::Result<(Server, SocketAddr)>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let metrics = web::Data::new(crate::metrics::install(service));
    let readiness = web::Data::new(readiness);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(crate::metrics::record_http))
            // Outermost, so the request span covers the metrics middleware and the handler.
            .wrap(from_fn(crate::telemetry::trace_http))
            .app_data(readiness.clone())
            .app_data(metrics.clone())
            .configure(crate::health::routes)
            .configure(routes.clone())
    });
    let server = match workers {
        Some(workers) => server.workers(workers),
        None => server,
    }
    .bind(listen)?;
    let bound = server.addrs().first().copied().unwrap_or(listen);
    Ok((server.shutdown_timeout(SHUTDOWN_GRACE_SECS).run(), bound))
}

/// Serves until a stop signal, then lets in-flight requests finish.
pub async fn serve<F>(
    service: &'static str,
    listen: SocketAddr,
    readiness: Readiness,
    routes: F,
) -> std::io::Result<()>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    serve_with_workers(service, listen, None, readiness, routes).await
}

/// As `serve`, with `workers` HTTP worker threads (default: one per CPU).
pub async fn serve_with_workers<F>(
    service: &'static str,
    listen: SocketAddr,
    workers: Option<usize>,
    readiness: Readiness,
    routes: F,
) -> std::io::Result<()>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let (server, bound) = bind_with_workers(service, listen, workers, readiness, routes)?;
    tracing::info!(listen = %bound, "{service} listening");
    server.await?;
    tracing::info!("{service} stopped");
    Ok(())
}
