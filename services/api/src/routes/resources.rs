//! The read-only collections: power devices (never a credential: `aos_power::PowerDeviceInfo`
//! carries only whether one is set), reserve bindings, availability storages, tasks with
//! their steps, events received from Nova, alarms.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Json;
use serde::Deserialize;
use serde_json::json;

use super::nodes::{node_named, storage_binding_view};
use super::page_limit;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::{AppState, Caller};

#[utoipa::path(
    get,
    path = "/v1/power-devices",
    tag = "power devices",
    description = "Power devices; never a credential, only whether one is set.",
    responses(
        (status = 200, description = "{\"power_devices\": [...]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn power_devices(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:power_device:list")?;
    let devices = aos_power::list_devices(&state.inner().db).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "power_devices": devices })))
}

#[utoipa::path(
    get,
    path = "/v1/power-devices/{name}",
    tag = "power devices",
    description = "One power device and its node bindings.",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "{\"power_device\": {...}}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
pub(crate) async fn power_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:power_device:show")?;
    let db = &state.inner().db;
    let device = aos_power::find_device(db, &name)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no power device named {name:?}")))?;
    let bindings = aos_power::device_bindings(db, device.id).await.map_err(ApiError::internal)?;
    let mut view = serde_json::to_value(device).map_err(ApiError::internal)?;
    view["bindings"] = serde_json::to_value(bindings).map_err(ApiError::internal)?;
    Ok(Json(json!({ "power_device": view })))
}

#[utoipa::path(
    get,
    path = "/v1/reserve-bindings",
    tag = "reserve",
    description = "Reserve hosts and the nodes they back.",
    responses(
        (status = 200, description = "{\"reserve_bindings\": [...]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn reserve_bindings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:reserve:list")?;
    let bindings: Vec<serde_json::Value> = aos_ha::reserve::list(&state.inner().db)
        .await?
        .into_iter()
        .map(|(reserve, main, priority, reserve_state)| {
            json!({ "reserve": reserve, "node": main, "priority": priority, "reserve_state": reserve_state })
        })
        .collect();
    Ok(Json(json!({ "reserve_bindings": bindings })))
}

#[utoipa::path(
    get,
    path = "/v1/storages",
    tag = "storages",
    description = "Availability storages and their node bindings.",
    responses(
        (status = 200, description = "{\"storages\": [...], \"bindings\": [...]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn storages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:storage:list")?;
    let db = &state.inner().db;
    let storages = aos_storage::list_storages(db).await.map_err(ApiError::internal)?;
    let bindings = aos_storage::list_bindings(db).await.map_err(ApiError::internal)?;
    let bindings: Vec<serde_json::Value> = bindings.iter().map(storage_binding_view).collect();
    Ok(Json(json!({ "storages": storages, "bindings": bindings })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskQuery {
    limit: Option<u64>,
    node: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    description = "Tasks, newest first.",
    params(("limit" = Option<u64>, Query), ("node" = Option<String>, Query, description = "Only tasks of this node")),
    responses(
        (status = 200, description = "{\"tasks\": [...]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn tasks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<TaskQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:task:list")?;
    let limit = page_limit(query.limit, state.inner().config.api.max_limit)?;
    let node_id = match &query.node {
        Some(name) => Some(node_named(&state, name).await?.id),
        None => None,
    };
    let tasks = aos_ha::store::list_tasks(&state.inner().db, limit, node_id).await?;
    Ok(Json(json!({ "tasks": tasks })))
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    description = "One task with its steps in order.",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "{\"task\": {..., \"steps\": [...]}}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub(crate) async fn task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:task:show")?;
    let (task, steps) = aos_ha::store::task_with_steps(&state.inner().db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task with id {id:?}")))?;
    let mut view = serde_json::to_value(task).map_err(ApiError::internal)?;
    view["steps"] = serde_json::to_value(steps).map_err(ApiError::internal)?;
    Ok(Json(json!({ "task": view })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    limit: Option<u64>,
    host: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    description = "Notifications received from Nova, newest first.",
    params(("limit" = Option<u64>, Query), ("host" = Option<String>, Query)),
    responses(
        (status = 200, description = "{\"events\": [...]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:event:list")?;
    let limit = page_limit(query.limit, state.inner().config.api.max_limit)?;
    let events = aos_db::list_notifications(&state.inner().db, query.host.as_deref(), limit).await?;
    Ok(Json(json!({ "events": events })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlarmQuery {
    limit: Option<u64>,
    /// Also cleared alarms.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(
    get,
    path = "/v1/alarms",
    tag = "alarms",
    description = "Alarms, newest first; open ones unless all=true.",
    params(("limit" = Option<u64>, Query), ("all" = Option<bool>, Query)),
    responses(
        (status = 200, description = "{\"alarms\": [...]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn alarms(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<AlarmQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:alarm:list")?;
    let limit = page_limit(query.limit, state.inner().config.api.max_limit)?;
    let alarms = aos_ha::store::list_alarms(&state.inner().db, query.all, limit).await?;
    Ok(Json(json!({ "alarms": alarms })))
}
