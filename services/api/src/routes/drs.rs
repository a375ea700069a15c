//! `/v1/drs`: DRS audits and action plans (docs/adr/0015-drs.md), what
//! `aos-cloud-manager drs audit create|list|show` and `drs plan show|apply|cancel` do:
//!
//! - `POST /v1/drs/audits` asks a source (our planner, or OpenStack Watcher configured in
//!   `[drs]`) now and records the audit and its plan (`aos_balance::drs::run_audit`; older
//!   recommended plans of the scope become superseded);
//! - `GET /v1/drs/audits` (newest first, `limit`/`marker`, filters), `GET /v1/drs/audits/{id}`,
//!   `GET /v1/drs/plans/{id}` with its actions;
//! - `POST /v1/drs/plans/{id}/apply` moves a recommended plan to applying and records its
//!   `drs_apply_plan` task for the workers (`aos_balance::drs::apply_plan`; 202 — the API runs
//!   no migration), `POST /v1/drs/plans/{id}/cancel` cancels a recommended or applying plan
//!   (`aos_balance::drs::cancel_plan`). A plan in another state is a 409 naming its state.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use serde_json::{Value, json};

use aos_balance::PlannerSettings;
use aos_balance::drs::{DrsError, PlannerRecommender, Recommender};
use aos_balance::watcher::{WatcherRecommender, WatcherSettings};
use aos_db::entity::{DrsAuditState, drs_action_plan, drs_audit};

use super::publish;
use super::{next_links, page_limit};
use crate::audit::AuditEntry;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::{AppState, Caller};

/// Who an API request is recorded as (tasks, audits).
pub(crate) fn actor(caller: &Caller) -> String {
    format!("{} (api)", caller.0.user_name)
}

/// `{"id", "href"}` of a task.
pub(crate) fn task_link(task_id: aos_jobs::TaskId) -> Value {
    let id = task_id.to_string();
    json!({ "id": id, "href": format!("/v1/tasks/{id}") })
}

fn drs_error(error: DrsError) -> ApiError {
    match error {
        DrsError::UnknownAudit(_) | DrsError::UnknownPlan(_) => ApiError::NotFound(error.to_string()),
        DrsError::WrongState { .. } => ApiError::Conflict(error.to_string()),
        DrsError::Db(error) => ApiError::from(error),
        DrsError::Jobs(error) => ApiError::internal(error),
    }
}

/// Where recommendations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DrsSource {
    /// aos-cloud-manager's planner (`[balancing]` settings).
    Planner,
    /// OpenStack Watcher (`[drs] host`, `port`, `username`, `password`).
    Watcher,
}

/// The body of `POST /v1/drs/audits`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditRequest {
    /// Only this host aggregate (name or id); default: every aggregate.
    #[serde(default)]
    aggregate: Option<String>,
    /// Default: `watcher` when `[drs] host` is set, else `planner`.
    #[serde(default)]
    source: Option<DrsSource>,
    /// Watcher's goal (default `workload_balancing`); Watcher only.
    #[serde(default)]
    goal: Option<String>,
    /// Watcher's strategy (default: Watcher chooses one for the goal); Watcher only.
    #[serde(default)]
    strategy: Option<String>,
    /// Strategy parameters for Watcher; Watcher only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Map<String, Value>>,
    /// How long to wait for Watcher's audit, in seconds (1..=3600, default 600); Watcher only.
    #[serde(default)]
    timeout: Option<u64>,
}

impl AuditRequest {
    fn details(&self, source: DrsSource) -> Value {
        json!({
            "aggregate": self.aggregate,
            "source": match source { DrsSource::Planner => "planner", DrsSource::Watcher => "watcher" },
            "goal": self.goal,
            "strategy": self.strategy,
            "parameters": self.parameters,
            "timeout": self.timeout,
        })
    }
}

#[utoipa::path(
    post,
    path = "/v1/drs/audits",
    tag = "drs",
    description = "Asks a source for recommendations now and records the audit with its action plan (recommended; older recommended plans of the same scope become superseded). The request lasts as long as the source takes (a Watcher audit is polled until it finishes or `timeout`). A source that fails gives a failed audit (201, state failed, its error), not an HTTP error.",
    request_body = AuditRequest,
    responses(
        (status = 201, description = "{\"audit\": {..., \"plans\": [{..., \"actions\": [...]}]}}", body = Object),
        (status = 400, description = "A bad body, named (e.g. source watcher without [drs] host)", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 503, description = "OpenStack cannot be reached", body = ErrorBody),
    )
)]
pub(crate) async fn create_audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<AuditRequest>,
) -> Response {
    let source = body.source.unwrap_or(if state.inner().config.drs.host.is_empty() {
        DrsSource::Planner
    } else {
        DrsSource::Watcher
    });
    let mut entry = AuditEntry {
        action: "cloud_manager:drs_audit:create".into(),
        target: body.aggregate.clone(),
        details: Some(body.details(source)),
    };
    let mut response = match audit(&state, &caller, &body, source).await {
        Ok((audit_id, view)) => {
            entry.target = Some(audit_id);
            (StatusCode::CREATED, Json(json!({ "audit": view }))).into_response()
        }
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(entry);
    response
}

async fn audit(
    state: &AppState,
    caller: &Caller,
    body: &AuditRequest,
    source: DrsSource,
) -> Result<(String, Value), ApiError> {
    state.authorize(caller, "cloud_manager:drs_audit:create")?;
    if body.aggregate.as_deref().is_some_and(|name| name.trim().is_empty()) {
        return Err(ApiError::BadRequest(
            "invalid field `aggregate`: must not be empty (omit it for every aggregate)".into(),
        ));
    }
    if source == DrsSource::Planner {
        for (field, given) in [
            ("goal", body.goal.is_some()),
            ("strategy", body.strategy.is_some()),
            ("parameters", body.parameters.is_some()),
            ("timeout", body.timeout.is_some()),
        ] {
            if given {
                return Err(ApiError::BadRequest(format!(
                    "invalid field `{field}`: only for source watcher (this audit's source is planner)"
                )));
            }
        }
    }
    let config = &state.inner().config;
    let client = state.cloud().await?.client().clone();
    let recommender: Box<dyn Recommender> = match source {
        DrsSource::Planner => Box::new(PlannerRecommender {
            client,
            settings: PlannerSettings::from_config(&config.balancing),
            deny_hosts: config.balancing.deny_hosts.clone(),
        }),
        DrsSource::Watcher => {
            let mut settings = WatcherSettings::from_config(config)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "invalid field `source`: watcher, but no DRS system is configured ([drs] host is empty)".into(),
                    )
                })?
                .map_err(|error| ApiError::ServiceUnavailable(format!("[drs]: {error}")))?;
            if let Some(goal) = &body.goal {
                if goal.trim().is_empty() {
                    return Err(ApiError::BadRequest("invalid field `goal`: must not be empty".into()));
                }
                settings.goal = goal.clone();
            }
            settings.strategy = body.strategy.clone();
            if let Some(parameters) = &body.parameters {
                settings.parameters.extend(parameters.clone());
            }
            match body.timeout {
                Some(seconds @ 1..=3600) => settings.timeout = Duration::from_secs(seconds),
                Some(other) => {
                    return Err(ApiError::BadRequest(format!("invalid field `timeout`: {other} is not in 1..=3600")));
                }
                None => settings.timeout = Duration::from_secs(600),
            }
            Box::new(
                WatcherRecommender::new(settings, Some(client))
                    .map_err(|error| ApiError::ServiceUnavailable(format!("[drs]: {error}")))?,
            )
        }
    };
    let db = &state.inner().db;
    let outcome = aos_balance::drs::run_audit(
        db,
        None,
        recommender.as_ref(),
        body.aggregate.as_deref(),
        "operator",
        &actor(caller),
    )
    .await
    .map_err(drs_error)?;
    let view = audit_view(state, &outcome.audit_id).await?;
    Ok((outcome.audit_id, view))
}

/// An audit with its plans, each with its actions.
async fn audit_view(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let db = &state.inner().db;
    let (audit, plans) =
        aos_db::drs_find_audit(db, id).await?.ok_or_else(|| ApiError::NotFound(format!("no DRS audit {id}")))?;
    let mut views = Vec::new();
    for plan in plans {
        views.push(plan_view(state, &plan.id).await?);
    }
    let mut view = serde_json::to_value(audit).map_err(ApiError::internal)?;
    view["plans"] = Value::Array(views);
    Ok(view)
}

/// A plan with its actions in order.
async fn plan_view(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let (plan, actions) = aos_db::drs_find_plan(&state.inner().db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no DRS action plan {id}")))?;
    let mut view = serde_json::to_value(plan).map_err(ApiError::internal)?;
    view["actions"] = serde_json::to_value(actions).map_err(ApiError::internal)?;
    Ok(view)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditListQuery {
    limit: Option<u64>,
    marker: Option<String>,
    state: Option<DrsAuditState>,
    source: Option<DrsSource>,
    aggregate: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/drs/audits",
    tag = "drs",
    description = "DRS audits, newest first, a page at a time, optionally filtered; each with the id and state of its action plan (null when it recommended nothing).",
    params(("limit" = Option<u64>, Query, description = "Page size, at most [api] max_limit (also the default)"), ("marker" = Option<String>, Query, description = "Id of the last audit of the previous page"), ("state" = Option<String>, Query, description = "ongoing, succeeded or failed"), ("source" = Option<String>, Query, description = "planner or watcher"), ("aggregate" = Option<String>, Query, description = "Only audits of this scope (an aggregate's name as given)")),
    responses(
        (status = 200, description = "{\"audits\": [...], \"audits_links\": [{\"rel\": \"next\", \"href\"}]}", body = Object),
        (status = 400, description = "A bad query parameter, named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
    )
)]
pub(crate) async fn list_audits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    ApiQuery(query): ApiQuery<AuditListQuery>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:drs_audit:list")?;
    let limit = page_limit(query.limit, state.inner().config.api.max_limit)?;
    let db = &state.inner().db;
    let mut select =
        drs_audit::Entity::find().order_by_desc(drs_audit::Column::CreatedAt).order_by_desc(drs_audit::Column::Id);
    if let Some(marker) = &query.marker {
        // As Nova: a marker that names nothing is the client's error, not an empty page.
        let marker = drs_audit::Entity::find_by_id(marker.clone())
            .one(db)
            .await?
            .ok_or_else(|| ApiError::BadRequest(format!("invalid query parameter `marker`: no DRS audit {marker}")))?;
        select = select.filter(
            Condition::any().add(drs_audit::Column::CreatedAt.lt(marker.created_at)).add(
                Condition::all()
                    .add(drs_audit::Column::CreatedAt.eq(marker.created_at))
                    .add(drs_audit::Column::Id.lt(marker.id.as_str())),
            ),
        );
    }
    if let Some(wanted) = query.state {
        select = select.filter(drs_audit::Column::State.eq(wanted));
    }
    if let Some(source) = query.source {
        let source = match source {
            DrsSource::Planner => "planner",
            DrsSource::Watcher => "watcher",
        };
        select = select.filter(drs_audit::Column::Source.eq(source));
    }
    if let Some(aggregate) = &query.aggregate {
        select = select.filter(drs_audit::Column::Scope.eq(aggregate.as_str()));
    }
    let audits = select.limit(limit).all(db).await?;
    // The plans of the page in one query.
    let ids: Vec<String> = audits.iter().map(|audit| audit.id.clone()).collect();
    let mut plans: BTreeMap<String, drs_action_plan::Model> = BTreeMap::new();
    if !ids.is_empty() {
        for plan in drs_action_plan::Entity::find()
            .filter(drs_action_plan::Column::AuditId.is_in(ids))
            .order_by_asc(drs_action_plan::Column::CreatedAt)
            .all(db)
            .await?
        {
            plans.insert(plan.audit_id.clone(), plan);
        }
    }
    let links = next_links("/v1/drs/audits", uri.query(), limit, audits.len(), audits.last().map(|a| a.id.as_str()));
    let mut views = Vec::with_capacity(audits.len());
    for audit in audits {
        let plan = plans.get(&audit.id).map(|plan| json!({ "id": plan.id, "state": plan.state }));
        let mut view = serde_json::to_value(audit).map_err(ApiError::internal)?;
        view["plan"] = plan.unwrap_or(Value::Null);
        views.push(view);
    }
    Ok(Json(json!({ "audits": views, "audits_links": links })))
}

#[utoipa::path(
    get,
    path = "/v1/drs/audits/{id}",
    tag = "drs",
    description = "One DRS audit with its action plan and the plan's actions.",
    params(("id" = String, Path, description = "The audit's id")),
    responses(
        (status = 200, description = "{\"audit\": {..., \"plans\": [{..., \"actions\": [...]}]}}", body = Object),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such audit", body = ErrorBody),
    )
)]
pub(crate) async fn show_audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:drs_audit:show")?;
    Ok(Json(json!({ "audit": audit_view(&state, &id).await? })))
}

#[utoipa::path(
    get,
    path = "/v1/drs/plans/{id}",
    tag = "drs",
    description = "One action plan (recommended, applying, succeeded, failed, superseded or cancelled) with its actions in order, each with its own state.",
    params(("id" = String, Path, description = "The action plan's id")),
    responses(
        (status = 200, description = "{\"plan\": {..., \"actions\": [...]}}", body = Object),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such action plan", body = ErrorBody),
    )
)]
pub(crate) async fn show_plan(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:drs_plan:show")?;
    Ok(Json(json!({ "plan": plan_view(&state, &id).await? })))
}

#[utoipa::path(
    post,
    path = "/v1/drs/plans/{id}/apply",
    tag = "drs",
    description = "Applies a recommended plan: it becomes applying and its drs_apply_plan task is recorded for the workers (bounded concurrency, Nova's migration records, retries; each action's state recorded). No body.",
    params(("id" = String, Path, description = "The action plan's id")),
    responses(
        (status = 202, description = "{\"task\": {\"id\", \"href\"}, \"plan\": {...}}", body = Object),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such action plan", body = ErrorBody),
        (status = 409, description = "The plan is not recommended (its state is named)", body = ErrorBody),
    )
)]
pub(crate) async fn apply_plan(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let entry = AuditEntry { action: "cloud_manager:drs_plan:apply".into(), target: Some(id.clone()), details: None };
    let mut response = apply(&state, &caller, &id).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(entry);
    response
}

async fn apply(state: &AppState, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    state.authorize(caller, "cloud_manager:drs_plan:apply")?;
    let task_id = aos_balance::drs::apply_plan(&state.inner().db, None, id, &actor(caller)).await.map_err(drs_error)?;
    publish(state, task_id).await;
    let plan = plan_view(state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "task": task_link(task_id), "plan": plan }))).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/drs/plans/{id}/cancel",
    tag = "drs",
    description = "Cancels a recommended or applying plan (an applying plan's task is cancelled; a migration already in flight finishes in Nova; pending actions become cancelled). No body.",
    params(("id" = String, Path, description = "The action plan's id")),
    responses(
        (status = 200, description = "{\"plan\": {...}, \"cancelled_task\": id or null}", body = Object),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 404, description = "No such action plan", body = ErrorBody),
        (status = 409, description = "The plan is neither recommended nor applying (its state is named)", body = ErrorBody),
    )
)]
pub(crate) async fn cancel_plan(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let entry = AuditEntry { action: "cloud_manager:drs_plan:cancel".into(), target: Some(id.clone()), details: None };
    let mut response = cancel(&state, &caller, &id).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(entry);
    response
}

async fn cancel(state: &AppState, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    state.authorize(caller, "cloud_manager:drs_plan:cancel")?;
    let cancelled = aos_balance::drs::cancel_plan(&state.inner().db, id).await.map_err(drs_error)?;
    let plan = plan_view(state, id).await?;
    Ok(Json(json!({ "plan": plan, "cancelled_task": cancelled.map(|task| task.to_string()) })).into_response())
}
