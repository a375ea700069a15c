//! The `/v1` resources, one module per resource family; every handler asks the policy for its
//! action first, then calls the domain crates.

pub(crate) mod balancing;
pub(crate) mod drs;
pub(crate) mod nodes;
pub(crate) mod resources;
pub(crate) mod settings;

use crate::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::routing::{get, post};

pub(crate) fn v1_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/{name}", get(nodes::show))
        .route("/v1/nodes/{name}/history", get(nodes::history))
        .route("/v1/nodes/{name}/power", get(nodes::power_status))
        .route("/v1/nodes/{name}/action", post(nodes::action))
        .route("/v1/power-devices", get(resources::power_devices))
        .route("/v1/power-devices/{name}", get(resources::power_device))
        .route("/v1/reserve-bindings", get(resources::reserve_bindings))
        .route("/v1/storages", get(resources::storages))
        .route("/v1/tasks", get(resources::tasks))
        .route("/v1/tasks/{id}", get(resources::task))
        .route("/v1/events", get(resources::events))
        .route("/v1/alarms", get(resources::alarms))
        .route("/v1/settings", get(settings::show))
        .route("/v1/balancing/preview", get(balancing::preview))
        .route("/v1/balancing/runs", post(balancing::run))
        .route("/v1/drs/audits", get(drs::list_audits).post(drs::create_audit))
        .route("/v1/drs/audits/{id}", get(drs::show_audit))
        .route("/v1/drs/plans/{id}", get(drs::show_plan))
        .route("/v1/drs/plans/{id}/apply", post(drs::apply_plan))
        .route("/v1/drs/plans/{id}/cancel", post(drs::cancel_plan))
}

/// The page size of a list request: the asked `limit` capped at `[api] max_limit` (as Nova
/// caps), which is also the size when none is asked. Zero is refused.
pub(crate) fn page_limit(limit: Option<u64>, max_limit: u32) -> Result<u64, ApiError> {
    match limit {
        Some(0) => Err(ApiError::BadRequest("invalid query parameter `limit`: must be at least 1".into())),
        Some(limit) => Ok(limit.min(u64::from(max_limit))),
        None => Ok(u64::from(max_limit)),
    }
}

/// The `<collection>_links` of a page: a `next` link when the page is full, keeping the
/// request's filters (`query`, the original query string) with the new marker.
pub(crate) fn next_links(
    path: &str,
    query: Option<&str>,
    limit: u64,
    returned: usize,
    last_marker: Option<&str>,
) -> serde_json::Value {
    match last_marker {
        Some(marker) if returned as u64 == limit => {
            let mut serializer = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                if key != "limit" && key != "marker" {
                    serializer.append_pair(&key, &value);
                }
            }
            serializer.append_pair("limit", &limit.to_string());
            serializer.append_pair("marker", marker);
            serde_json::json!([{ "rel": "next", "href": format!("{path}?{}", serializer.finish()) }])
        }
        _ => serde_json::json!([]),
    }
}

/// Publishes a recorded task to the workers; if the queue is unreachable the beat's sweep
/// publishes it (the task is in the database either way).
pub(crate) async fn publish(state: &AppState, task_id: aos_jobs::TaskId) {
    let db = &state.inner().db;
    let config = &state.inner().config;
    let opened = if db.get_database_backend() == aos_db::DbBackend::Sqlite {
        aos_jobs::JobQueue::sqlite(db).await
    } else {
        aos_jobs::JobQueue::connect_amqp(&config.default.transport_url.to_amqp_uri(), &config.worker.queue_prefix).await
    };
    match opened {
        Ok(queue) => {
            if let Err(error) = queue.publish(task_id).await {
                tracing::warn!(%error, %task_id, "task recorded but not published; the beat's sweep publishes it");
            }
            queue.close().await;
        }
        Err(error) => tracing::warn!(%error, %task_id, "job queue unreachable; the beat's sweep publishes the task"),
    }
}
