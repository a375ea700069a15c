//! `/v1/balancing`: the plan the planner would make now (`GET /v1/balancing/preview`, what
//! `aos-cloud-manager balance preview` prints) and an operator's balancing run
//! (`POST /v1/balancing/runs`: the plan recorded as a `balance_aggregate` task for the
//! workers, 202 — the API never migrates anything itself). docs/adr/0014-balancing.md.
//!
//! The planning is `aos_balance`'s (one bulk read of Nova and Placement, `aos_balance::plan`
//! with the `[balancing]` settings and deny list); nothing is decided here.

use std::collections::BTreeSet;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::json;

use aos_balance::{BALANCE_AGGREGATE, BalanceTask, CloudSnapshot, GatherError, Gathered, Plan, PlannerSettings};

use super::drs::{actor, task_link};
use super::publish;
use crate::audit::AuditEntry;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::{AppState, Caller};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewQuery {
    aggregate: Option<String>,
}

/// Reads the cloud once and plans the aggregates asked for (as the CLI's `balance preview`).
/// `field` names where the aggregate came from, for the 400 of an unknown one.
async fn plan_all(state: &AppState, aggregate: Option<&str>, field: &str) -> Result<Vec<(Gathered, Plan)>, ApiError> {
    let config = &state.inner().config;
    let cloud = state.cloud().await?;
    let snapshot = CloudSnapshot::read(cloud.client())
        .await
        .map_err(|error| ApiError::ServiceUnavailable(format!("cannot read the cloud: {error}")))?;
    let deny_hosts: BTreeSet<String> = config.balancing.deny_hosts.iter().cloned().collect();
    let aggregates = snapshot.aggregates_named(aggregate).map_err(|error| match error {
        GatherError::UnknownAggregate(_) => ApiError::BadRequest(format!("{field}: {error}")),
        GatherError::OpenStack(error) => ApiError::ServiceUnavailable(format!("cannot read the cloud: {error}")),
    })?;
    let settings = PlannerSettings::from_config(&config.balancing);
    let mut plans = Vec::new();
    for aggregate in aggregates {
        let gathered = snapshot.input_for(aggregate, &deny_hosts);
        let plan = aos_balance::plan(&gathered.input, &settings)
            .map_err(|error| ApiError::internal(format!("cannot plan aggregate {}: {error}", aggregate.name)))?;
        plans.push((gathered, plan));
    }
    Ok(plans)
}

fn plan_view(gathered: &Gathered, plan: &Plan) -> serde_json::Value {
    json!({ "plan": plan, "left_out": gathered.left_out })
}

#[utoipa::path(
    get,
    path = "/v1/balancing/preview",
    tag = "balancing",
    description = "The live migrations the planner would make now for each aggregate (or the one named), with every host's load before and after and the hosts left out; nothing is changed (as `aos-cloud-manager balance preview`).",
    params(("aggregate" = Option<String>, Query, description = "Only this host aggregate (name or id); default: every aggregate that has hosts")),
    responses(
        (status = 200, description = "{\"plans\": [{\"plan\": {\"aggregate\", \"threshold\", \"hosts\", \"migrations\", ...}, \"left_out\": [...]}]}", body = Object),
        (status = 400, description = "A bad query parameter (an unknown aggregate), named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 503, description = "Nova or Placement cannot be reached", body = ErrorBody),
    )
)]
pub(crate) async fn preview(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<PreviewQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(&caller, "cloud_manager:balancing:preview")?;
    let aggregate = non_empty(query.aggregate.as_deref(), "invalid query parameter `aggregate`")?;
    let plans = plan_all(&state, aggregate, "invalid query parameter `aggregate`").await?;
    let plans: Vec<serde_json::Value> = plans.iter().map(|(gathered, plan)| plan_view(gathered, plan)).collect();
    Ok(Json(json!({ "plans": plans })))
}

fn non_empty<'a>(value: Option<&'a str>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(value) if value.trim().is_empty() => Err(ApiError::BadRequest(format!("{field}: must not be empty"))),
        other => Ok(other),
    }
}

/// The body of `POST /v1/balancing/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BalancingRunRequest {
    /// The host aggregate to balance (name or id).
    aggregate: String,
}

#[utoipa::path(
    post,
    path = "/v1/balancing/runs",
    tag = "balancing",
    description = "Plans the aggregate now and records the plan as a balance_aggregate task for the workers (bounded concurrency, retries, re-planning when the cloud changed: ADR 0014); the API does not migrate anything itself. 202 with the task when there is something to move, 200 with task null when the aggregate needs no migration. Refused (409) while an HA recovery or another balancing task of the aggregate is pending or running.",
    request_body = BalancingRunRequest,
    responses(
        (status = 200, description = "Nothing to move: {\"task\": null, \"plan\", \"left_out\"}", body = Object),
        (status = 202, description = "Recorded: {\"task\": {\"id\", \"href\"}, \"plan\", \"left_out\"}", body = Object),
        (status = 400, description = "A bad body (an unknown aggregate), named", body = ErrorBody),
        (status = 401, description = "No valid Keystone token", body = ErrorBody),
        (status = 403, description = "The policy denies this action", body = ErrorBody),
        (status = 409, description = "An HA recovery or a balancing task of the aggregate is pending or running", body = ErrorBody),
        (status = 503, description = "Nova or Placement cannot be reached", body = ErrorBody),
    )
)]
pub(crate) async fn run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<BalancingRunRequest>,
) -> Response {
    let entry = AuditEntry {
        action: "cloud_manager:balancing:run".into(),
        target: Some(body.aggregate.clone()),
        details: Some(json!({ "aggregate": body.aggregate })),
    };
    let mut response = record_run(&state, &caller, &body).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(entry);
    response
}

async fn record_run(state: &AppState, caller: &Caller, body: &BalancingRunRequest) -> Result<Response, ApiError> {
    state.authorize(caller, "cloud_manager:balancing:run")?;
    non_empty(Some(&body.aggregate), "invalid field `aggregate`")?;
    let db = &state.inner().db;
    // The beat's rule (ADR 0014): never on top of an HA recovery, never two balancing tasks
    // of one aggregate at once.
    let active = aos_db::active_tasks_of_kinds(db, &[aos_ha::RECOVER_NODE, BALANCE_AGGREGATE]).await?;
    if let Some(recovery) = active.iter().find(|task| task.kind == aos_ha::RECOVER_NODE) {
        return Err(ApiError::Conflict(format!(
            "HA recovery task {} is {}: balancing waits until it has finished",
            recovery.id, recovery.state
        )));
    }
    let plans = plan_all(state, Some(&body.aggregate), "invalid field `aggregate`").await?;
    let Some((gathered, plan)) = plans.into_iter().next() else {
        return Err(ApiError::BadRequest(format!("invalid field `aggregate`: no host aggregate {:?}", body.aggregate)));
    };
    let aggregate_of = |task: &aos_db::entity::task::Model| {
        task.payload
            .as_ref()
            .and_then(|payload| payload.get("aggregate"))
            .and_then(|name| name.as_str())
            .map(str::to_owned)
    };
    if let Some(busy) = active.iter().find(|task| aggregate_of(task).as_deref() == Some(plan.aggregate.as_str())) {
        return Err(ApiError::Conflict(format!(
            "balancing task {} of aggregate {} is {}: one balancing of an aggregate at a time",
            busy.id, plan.aggregate, busy.state
        )));
    }
    if plan.migrations.is_empty() {
        return Ok(Json(json!({ "task": null, "plan": plan, "left_out": gathered.left_out })).into_response());
    }
    let config = &state.inner().config;
    let task = BalanceTask {
        aggregate: plan.aggregate.clone(),
        migrations: plan.migrations.clone(),
        actor: actor(caller),
        settings: PlannerSettings::from_config(&config.balancing),
        deny_hosts: config.balancing.deny_hosts.clone(),
    };
    let payload = serde_json::to_value(&task).map_err(ApiError::internal)?;
    let recorded = aos_jobs::insert_task(db, &aos_jobs::NewTask::new(BALANCE_AGGREGATE, payload))
        .await
        .map_err(|error| ApiError::internal(format!("cannot record the balancing task: {error}")))?;
    publish(state, recorded.task_id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "task": task_link(recorded.task_id), "plan": plan, "left_out": gathered.left_out })),
    )
        .into_response())
}
