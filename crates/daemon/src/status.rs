//! The status endpoint every daemon can serve: `GET /healthz` (the process answers),
//! `GET /readyz` (200 only when every dependency check passes, 503 otherwise, with the checks in
//! the body) and `GET /metrics` (Prometheus text, [`crate::metrics`]). The API daemon mounts the same routes on its own port; the others serve them on
//! `[<service>] status_port` (0 = none).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::readiness::Readiness;
use crate::shutdown::ShutdownToken;

#[derive(Clone)]
struct StatusState {
    role: &'static str,
    readiness: Readiness,
}

/// Routes `/healthz` and `/readyz` for `role`, to be merged into a larger router or served alone.
pub fn status_routes<S: Clone + Send + Sync + 'static>(role: &'static str, readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(StatusState { role, readiness })
}

async fn healthz(State(state): State<StatusState>) -> impl IntoResponse {
    Json(json!({ "status": "alive", "role": state.role }))
}

/// Prometheus text exposition format 0.0.4 (see [`crate::metrics`]).
async fn metrics(State(state): State<StatusState>) -> impl IntoResponse {
    let body = crate::metrics::render(state.role).await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn readyz(State(state): State<StatusState>) -> impl IntoResponse {
    let ready = state.readiness.is_ready();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "role": state.role,
        "checks": state.readiness.snapshot(),
    });
    (code, Json(body))
}

/// Binds `address` and serves the status routes until `shutdown`. Returns the bound address
/// (port 0 picks a free one) and the serving task.
pub async fn serve_status(
    role: &'static str,
    address: SocketAddr,
    readiness: Readiness,
    shutdown: ShutdownToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot bind the {role} status endpoint on {address}"))?;
    let bound = listener.local_addr()?;
    let router: Router = status_routes(role, readiness);
    let task = tokio::spawn(async move {
        let served =
            axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(error) = served {
            tracing::error!(%error, role, "status endpoint stopped with an error");
        }
    });
    tracing::info!(role, address = %bound, "status endpoint listening");
    Ok((bound, task))
}
