//! `/v1/nodes`: list (paginated by name, filtered), show, history, power status, and the
//! actions (`POST /v1/nodes/{name}/action` with one key, as Nova's server actions):
//! `evacuate` (with `dry_run`), `maintenance`, `evacuation` (allow/deny), `power`.
//! The actions are `aos_ha::operator`'s and `aos_power`'s; nothing is decided here.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::Uri;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::json;

use aos_db::entity::{NodeState, node};
use aos_ha::operator::{self, OperatorError};

use super::publish;
use super::{next_links, page_limit};
use crate::audit::AuditEntry;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::{AppState, Caller};

/// A node as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Node)]
pub(crate) struct NodeView {
    pub name: String,
    #[schema(value_type = String, example = "up")]
    pub state: NodeState,
    pub state_changed_at: DateTime<Utc>,
    pub maintenance: bool,
    pub evacuation_allowed: bool,
    pub is_reserve: bool,
    pub removed_from_nova: bool,
    pub nova_service_id: Option<String>,
    pub nova_status: Option<String>,
    pub nova_state: Option<String>,
    pub nova_forced_down: bool,
    pub hypervisor_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<node::Model> for NodeView {
    fn from(node: node::Model) -> Self {
        NodeView {
            maintenance: node.state == NodeState::Maintenance,
            name: node.name,
            state: node.state,
            state_changed_at: node.state_changed_at,
            evacuation_allowed: node.evacuation_allowed,
            is_reserve: node.is_reserve,
            removed_from_nova: node.removed_from_nova,
            nova_service_id: node.nova_service_id,
            nova_status: node.nova_status,
            nova_state: node.nova_state,
            nova_forced_down: node.nova_forced_down,
            hypervisor_id: node.hypervisor_id,
            created_at: node.created_at,
            updated_at: node.updated_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeListQuery {
    limit: Option<u64>,
    marker: Option<String>,
    state: Option<NodeState>,
    maintenance: Option<bool>,
    reserve: Option<bool>,
    evacuation_allowed: Option<bool>,
    removed: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "nodes",
    description = "Nodes by name, a page at a time, optionally filtered. An identical list may be answered from a snapshot up to 100 ms old (never older than a write through this API); send Cache-Control: no-cache for a fresh read.",
    params(("limit" = Option<u64>, Query, description = "Page size, at most [api] max_limit (also the default)"), ("marker" = Option<String>, Query, description = "Name of the last node of the previous page"), ("state" = Option<String>, Query, description = "Only nodes in this state (up, suspect, down, maintenance, ...)"), ("maintenance" = Option<bool>, Query), ("reserve" = Option<bool>, Query), ("evacuation_allowed" = Option<bool>, Query), ("removed" = Option<bool>, Query, description = "Nodes Nova no longer lists")),
    responses(
        (status = 200, description = "{\"nodes\": [Node], \"nodes_links\": [{\"rel\": \"next\", \"href\"}]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    ApiQuery(query): ApiQuery<NodeListQuery>,
) -> Result<Response, ApiError> {
    state.authorize(&caller, "cloud_manager:node:list")?;
    let limit = page_limit(query.limit, state.inner().config.api.max_limit)?;
    // The same query answered moments ago, and nothing written through this API since;
    // `Cache-Control: no-cache` asks for a fresh read (HTTP's meaning).
    let key = uri.query().unwrap_or("");
    let snapshots = &state.inner().node_lists;
    let fresh_wanted = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|value| value.to_str().is_ok_and(|value| value.to_ascii_lowercase().contains("no-cache")));
    let _builder = if fresh_wanted {
        None
    } else {
        if let Some(body) = snapshots.get(key) {
            return Ok(json_bytes(body));
        }
        let builder = snapshots.build_lock(key).await;
        if let Some(body) = snapshots.get(key) {
            return Ok(json_bytes(body));
        }
        Some(builder)
    };
    let generation = snapshots.generation();
    let built = std::time::Instant::now();
    let db = &state.inner().db;
    let mut select = node::Entity::find().order_by_asc(node::Column::Name);
    if let Some(marker) = &query.marker {
        // As Nova: a marker that names nothing is the client's error, not an empty page.
        if aos_db::find_node(db, marker).await?.is_none() {
            return Err(ApiError::BadRequest(format!("invalid query parameter `marker`: no node named {marker:?}")));
        }
        select = select.filter(node::Column::Name.gt(marker.as_str()));
    }
    if let Some(wanted) = query.state {
        select = select.filter(node::Column::State.eq(wanted));
    }
    match query.maintenance {
        Some(true) => select = select.filter(node::Column::State.eq(NodeState::Maintenance)),
        Some(false) => select = select.filter(node::Column::State.ne(NodeState::Maintenance)),
        None => {}
    }
    if let Some(reserve) = query.reserve {
        select = select.filter(node::Column::IsReserve.eq(reserve));
    }
    if let Some(allowed) = query.evacuation_allowed {
        select = select.filter(node::Column::EvacuationAllowed.eq(allowed));
    }
    if let Some(removed) = query.removed {
        select = select.filter(node::Column::RemovedFromNova.eq(removed));
    }
    let nodes: Vec<NodeView> = select.limit(limit).all(db).await?.into_iter().map(NodeView::from).collect();
    let links = next_links("/v1/nodes", uri.query(), limit, nodes.len(), nodes.last().map(|node| node.name.as_str()));
    // Serialized straight from the views (no intermediate `Value` tree).
    let body = serde_json::to_vec(&NodePage { nodes: &nodes, nodes_links: &links }).map_err(ApiError::internal)?;
    let body = Bytes::from(body);
    snapshots.store(key, generation, built, body.clone());
    Ok(json_bytes(body))
}

#[derive(Serialize)]
struct NodePage<'a> {
    nodes: &'a [NodeView],
    nodes_links: &'a serde_json::Value,
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A node's binding to an availability storage.
pub(crate) fn storage_binding_view(binding: &aos_storage::NodeStorage) -> serde_json::Value {
    json!({
        "storage": binding.storage.name,
        "path": binding.storage.path,
        "node": binding.node_name,
        "state_file_at": binding.state_file_at,
    })
}

pub(crate) async fn node_named(state: &AppState, name: &str) -> Result<node::Model, ApiError> {
    aos_db::find_node(&state.inner().db, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no node named {name:?} (GET /v1/nodes lists them)")))
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{name}",
    tag = "nodes",
    description = "One node with its power bindings and storages.",
    params(("name" = String, Path, description = "Node (hypervisor host) name")),
    responses(
        (status = 200, description = "{\"node\": Node}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    )
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:node:show")?;
    let node = node_named(&state, &name).await?;
    let bindings = aos_power::node_bindings(&state.inner().db, node.id).await.map_err(ApiError::internal)?;
    let storages = aos_storage::storages_of_node(&state.inner().db, node.id).await.map_err(ApiError::internal)?;
    let mut view = serde_json::to_value(NodeView::from(node)).map_err(ApiError::internal)?;
    view["power_bindings"] = serde_json::to_value(bindings).map_err(ApiError::internal)?;
    view["storages"] = storages.iter().map(storage_binding_view).collect();
    Ok(Json(json!({ "node": view })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    limit: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{name}/history",
    tag = "nodes",
    description = "The node's timeline, newest first.",
    params(("name" = String, Path, description = "Node (hypervisor host) name"), ("limit" = Option<u64>, Query)),
    responses(
        (status = 200, description = "{\"node\", \"events\": [...]}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    )
)]
pub(crate) async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:node:history")?;
    let limit = page_limit(query.limit, state.inner().config.api.max_limit)?;
    let node = node_named(&state, &name).await?;
    let events = aos_db::node_history(&state.inner().db, node.id, limit).await?;
    Ok(Json(json!({ "node": name, "events": events })))
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{name}/power",
    tag = "nodes",
    description = "The node's power state read from its power device.",
    params(("name" = String, Path, description = "Node (hypervisor host) name")),
    responses(
        (status = 200, description = "{\"power\": report}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node has no power device", body = ErrorBody),
        (status = 503, description = "The power device did not answer", body = ErrorBody),
    )
)]
pub(crate) async fn power_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:node:power_status")?;
    let node = node_named(&state, &name).await?;
    let report = run_power(&state, &caller, &node, aos_power::PowerAction::Status).await?;
    Ok(Json(json!({ "power": report })))
}

/// The body of `POST /v1/nodes/{name}/action`: exactly one action.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum NodeAction {
    Evacuate(EvacuateArgs),
    Maintenance(MaintenanceArgs),
    Evacuation(EvacuationArgs),
    Power(PowerArgs),
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvacuateArgs {
    /// Only compute the plan.
    #[serde(default)]
    dry_run: bool,
    /// Evacuate without powering the node off first (the operator vouches it is dead).
    #[serde(default)]
    skip_fence: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaintenanceArgs {
    enabled: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvacuationArgs {
    allowed: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PowerArgs {
    action: PowerVerb,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PowerVerb {
    Status,
    On,
    Off,
    Reset,
}

impl PowerVerb {
    fn action(self) -> aos_power::PowerAction {
        match self {
            PowerVerb::Status => aos_power::PowerAction::Status,
            PowerVerb::On => aos_power::PowerAction::On,
            PowerVerb::Off => aos_power::PowerAction::Off,
            PowerVerb::Reset => aos_power::PowerAction::Reset,
        }
    }
}

/// Who an API action is recorded as in node timelines.
fn actor(caller: &Caller) -> String {
    format!("{} (api)", caller.0.user_name)
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/action",
    tag = "nodes",
    description = "One action: evacuate (dry_run, skip_fence), maintenance (enabled), evacuation (allowed), power (action).",
    params(("name" = String, Path, description = "Node (hypervisor host) name")),
    request_body = NodeAction,
    responses(
        (status = 200, description = "Done: the node, the plan (dry run) or the power report", body = Object),
        (status = 202, description = "Evacuation recorded as a task: {\"task\": {\"id\", \"href\"}}", body = Object),
        (status = 400, description = "A bad query parameter or body, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node's state does not allow it now", body = ErrorBody),
    )
)]
pub(crate) async fn action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NodeAction>,
) -> Response {
    let (policy_action, details) = match &body {
        NodeAction::Evacuate(args) => (
            "cloud_manager:node:evacuate",
            json!({ "evacuate": { "dry_run": args.dry_run, "skip_fence": args.skip_fence } }),
        ),
        NodeAction::Maintenance(args) => {
            ("cloud_manager:node:maintenance", json!({ "maintenance": { "enabled": args.enabled } }))
        }
        NodeAction::Evacuation(args) => {
            ("cloud_manager:node:evacuation_policy", json!({ "evacuation": { "allowed": args.allowed } }))
        }
        NodeAction::Power(args) => (
            "cloud_manager:node:power_action",
            json!({ "power": { "action": format!("{:?}", args.action).to_lowercase() } }),
        ),
    };
    let entry = AuditEntry { action: policy_action.to_string(), target: Some(name.clone()), details: Some(details) };
    let mut response = match perform(&state, &caller, &name, policy_action, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(entry);
    response
}

async fn perform(
    state: &AppState,
    caller: &Caller,
    name: &str,
    policy_action: &str,
    body: NodeAction,
) -> Result<Response, ApiError> {
    state.authorize(caller, policy_action)?;
    let db = &state.inner().db;
    match body {
        NodeAction::Evacuate(args) if args.dry_run => {
            node_named(state, name).await?;
            let cloud = state.cloud().await?;
            let plan = operator::dry_run(db, cloud, name, state.inner().config.host_tasks.recovery_priority)
                .await
                .map_err(operator_error)?;
            Ok(Json(json!({ "dry_run": true, "plan": plan })).into_response())
        }
        NodeAction::Evacuate(args) => {
            let task_id = operator::request_evacuation(db, name, args.skip_fence, &actor(caller))
                .await
                .map_err(operator_error)?;
            publish(state, task_id).await;
            let task_id = task_id.to_string();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "task": { "id": task_id, "href": format!("/v1/tasks/{task_id}") } })),
            )
                .into_response())
        }
        NodeAction::Maintenance(args) => {
            operator::set_maintenance(db, name, args.enabled, &actor(caller)).await.map_err(operator_error)?;
            let node = node_named(state, name).await?;
            Ok(Json(json!({ "node": NodeView::from(node) })).into_response())
        }
        NodeAction::Evacuation(args) => {
            operator::set_evacuation_allowed(db, name, args.allowed, &actor(caller)).await.map_err(operator_error)?;
            let node = node_named(state, name).await?;
            Ok(Json(json!({ "node": NodeView::from(node) })).into_response())
        }
        NodeAction::Power(args) => {
            let node = node_named(state, name).await?;
            let report = run_power(state, caller, &node, args.action.action()).await?;
            Ok(Json(json!({ "power": report })).into_response())
        }
    }
}

async fn run_power(
    state: &AppState,
    caller: &Caller,
    node: &node::Model,
    action: aos_power::PowerAction,
) -> Result<aos_power::OperationReport, ApiError> {
    let config = &state.inner().config;
    // Said before the keyring is needed: a node without a device is the usual case.
    if !aos_power::has_power_device(&state.inner().db, node.id).await.map_err(ApiError::internal)? {
        return Err(ApiError::Conflict(format!(
            "node {} has no power device (bind one with `aos-cloud-manager node init`)",
            node.name
        )));
    }
    let keyring = aos_power::Keyring::from_config(&config.power)
        .map_err(|error| ApiError::ServiceUnavailable(format!("the power keyring is not usable: {error}")))?;
    let settings = aos_power::PowerSettings::from(&config.power);
    aos_power::run_node_operation(&state.inner().db, &keyring, node.id, action, &actor(caller), None, &settings)
        .await
        .map_err(|error| match error {
            aos_power::NodeOperationError::NoPowerDevice { .. } => ApiError::Conflict(error.to_string()),
            aos_power::NodeOperationError::NodeNotFound { .. } => ApiError::NotFound(error.to_string()),
            aos_power::NodeOperationError::Power { .. } => ApiError::ServiceUnavailable(error.to_string()),
            aos_power::NodeOperationError::Store(store) => ApiError::internal(store),
        })
}

fn operator_error(error: OperatorError) -> ApiError {
    match error {
        OperatorError::UnknownNode(name) => ApiError::NotFound(format!("no node named {name:?}")),
        OperatorError::Refused(message) => ApiError::Conflict(message),
        OperatorError::Cloud(error) => ApiError::ServiceUnavailable(format!("the cloud: {error}")),
        other => ApiError::internal(other),
    }
}
