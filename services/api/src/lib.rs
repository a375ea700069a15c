//! `aos-cloud-manager-api`: the REST API on `[api] host`:`[api] port` (9362), registered in
//! Keystone as service type `cloud-manager`. This foundation serves version discovery and the
//! health routes; resources are added by the API issue as the capabilities behind them land.

use anyhow::Context as _;
use aos_daemon::DaemonContext;
use axum::Router;
use axum::response::Json;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const ROLE: &str = "api";

/// Binds `[api] host:port` and serves until shutdown.
pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let address = context.config.api.bind_address();
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot bind the API on {address} ([api] host / port)"))?;
    serve(listener, context).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(listener: TcpListener, context: DaemonContext) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "API listening");
    let shutdown = context.shutdown.clone();
    axum::serve(listener, router(&context))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("API server failed")
}

pub fn router(context: &DaemonContext) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/v1", get(version_v1))
        .merge(aos_daemon::status::status_routes(ROLE, context.readiness.clone()))
}

fn v1_document() -> Value {
    json!({
        "id": "v1",
        "status": "CURRENT",
        "links": [{ "rel": "self", "href": "/v1" }],
        "media-types": [{ "base": "application/json", "type": "application/vnd.openstack.cloud-manager-v1+json" }],
    })
}

/// OpenStack-style version discovery (`GET /`).
async fn versions() -> Json<Value> {
    Json(json!({ "versions": [v1_document()] }))
}

async fn version_v1() -> Json<Value> {
    Json(json!({ "version": v1_document() }))
}

/// `[api] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.api.logfile.as_deref()
}
