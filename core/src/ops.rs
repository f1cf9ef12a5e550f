//! The ops listener of a worker (`--ops-listen`): `GET /metrics` (the
//! process's metrics), `/healthz` (the process is alive) and `/readyz` (it
//! is ready for work, as its [`Readiness`] says). Edges serve the same three
//! paths on their client port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Whether a component is ready for work; set by the component itself.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Ops {
    metrics: Metrics,
    ready: Readiness,
}

/// The three routes, for a listener of their own or merged into another router.
pub fn routes(metrics: Metrics, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Ops { metrics, ready })
}

async fn render(State(ops): State<Ops>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], ops.metrics.render())
}

async fn readyz(State(ops): State<Ops>) -> (StatusCode, &'static str) {
    if ops.ready.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

/// Serves the ops routes on `listener` until `shutdown`. Binaries bind the
/// listener before anything else starts, so a taken port fails the start.
pub async fn serve(listener: TcpListener, metrics: Metrics, ready: Readiness, shutdown: CancellationToken) {
    let app = routes(metrics, ready);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "ops listener: /metrics /healthz /readyz");
    }
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "ops listener failed");
    }
}
