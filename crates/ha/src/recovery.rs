//! The `recover_node` task: what happens to a confirmed-down node, on a worker, as steps that
//! a worker killed at any moment leaves for another to finish without doing anything twice.
//!
//! 1. `isolation_check` — unless our own power operation explains the down, or the check is
//!    off: a fresh state file with enough running instances withholds the evacuation.
//! 2. `claim` — the storm guard once more (things changed since the tracker decided), then the
//!    conditional move `down → fencing`: if the node is no longer down (it came back), the
//!    task ends having done nothing.
//! 3. `fence` — power off and verify off when the node has a power device; a failure stops
//!    here (`fence_failed`, an alarm) unless the operator asked to skip fencing.
//! 4. `force_down` — Nova's `forced_down` on the node's nova-compute, so Nova accepts the
//!    evacuations and schedules nothing there.
//! 5. `plan` — the servers grouped by recovery priority, with a capacity check.
//! 6. `evacuate` (one step per server) group by group, highest priority first; each group is
//!    awaited (`await_group`) up to `prioritized_evacuation_timeout` before the next starts.
//!    Before asking Nova, a step checks whether the server already left the host or already
//!    has an evacuation record from this incident: the crash window of a step (evacuation
//!    asked, success not yet recorded) never evacuates a server twice.
//! 7. `await_all` — every server back in its prior state (ACTIVE or SHUTOFF) on another host,
//!    polled at most `retries_wait_for_vm_status` times; `evacuation_retries` new requests for
//!    a server whose evacuation failed. Then `evacuated` or `evacuation_failed` (an alarm).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use aos_db::entity::{NodeState, node};
use aos_jobs::{TaskContext, TaskError};

use crate::cloud::{Cloud, CloudError, CloudServer, EvacuationRecord};
use crate::fence::{FenceError, FenceTarget, Fencer};
use crate::isolation::{IsolationSettings, IsolationVerdict, StateFiles};
use crate::plan::{EvacuationPlan, PlannedServer};
use crate::store;
use crate::tracker::RecoverNode;

/// The recovery task's knobs, from `[host_tasks]`, `[node_tracker]` and
/// `[extra_availability_check]`.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub isolation: Option<IsolationSettings>,
    pub max_down_hosts: u32,
    pub default_priority: u32,
    pub evacuation_retries: u32,
    pub prioritized_evacuation_timeout: Duration,
    pub retries_wait_for_vm_status: u32,
    /// Pause between two polls of the servers' state.
    pub poll_interval: Duration,
    /// Evacuation requests in flight at once (Nova is not stormed).
    pub concurrency: usize,
    /// A power operation of ours requested this long before the down explains it.
    pub power_explains_within: Duration,
    /// `[node_tracker] allow_host_auto_power_off`: after its servers are evacuated, power a
    /// fenced host on again and return it to service once Nova accepts it.
    pub restart_after_evacuation: bool,
    /// `[node_tracker] host_restart_timeout`.
    pub host_restart_timeout: Duration,
    /// `[node_tracker] timeout_reserv_node_up`: how long a reserve host may take to boot.
    pub reserve_up_timeout: Duration,
    /// `[power] shutdown_interval` and `shutdown_max_tick`: how a planned shutdown waits for
    /// Nova to see the host down.
    pub shutdown_interval: Duration,
    pub shutdown_max_tick: u32,
}

impl RecoverySettings {
    pub fn from_config(config: &aos_config::Config) -> Self {
        RecoverySettings {
            isolation: IsolationSettings::from_config(config),
            max_down_hosts: config.node_tracker.max_down_hosts,
            default_priority: config.host_tasks.recovery_priority,
            evacuation_retries: config.host_tasks.evacuation_retries,
            prioritized_evacuation_timeout: config.host_tasks.prioritized_evacuation_timeout,
            retries_wait_for_vm_status: config.host_tasks.retries_wait_for_vm_status.max(1),
            poll_interval: Duration::from_secs(2),
            concurrency: 8,
            power_explains_within: Duration::from_secs(300),
            restart_after_evacuation: config.node_tracker.allow_host_auto_power_off,
            host_restart_timeout: config.node_tracker.host_restart_timeout,
            reserve_up_timeout: config.node_tracker.timeout_reserv_node_up,
            shutdown_interval: config.power.shutdown_interval,
            shutdown_max_tick: config.power.shutdown_max_tick,
        }
    }
}

/// What a recovery task works with. Cheap to clone.
#[derive(Clone)]
pub struct Recovery {
    pub db: aos_db::DatabaseConnection,
    pub cloud: Arc<dyn Cloud>,
    pub fencer: Arc<dyn Fencer>,
    pub state_files: Arc<dyn StateFiles>,
    pub settings: RecoverySettings,
}

/// Per-server outcome, in the task result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerOutcome {
    pub id: String,
    pub name: String,
    pub priority: u32,
    pub ok: bool,
    pub host: Option<String>,
    pub status: String,
    pub detail: String,
}

/// What the `evacuate` step did for one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationRequest {
    /// We asked Nova (false: the server had already left or had an evacuation under way).
    pub requested: bool,
    pub requests: u32,
    pub note: String,
}

pub(crate) fn retryable(error: impl std::fmt::Display) -> TaskError {
    TaskError::retryable(error)
}

/// A cloud error as a task error: transient ones are retried, the others fail the task.
pub(crate) fn cloud_error(error: CloudError) -> TaskError {
    if error.is_transient() { TaskError::Retryable(error.to_string()) } else { TaskError::Fatal(error.to_string()) }
}

impl Recovery {
    /// The handler of `recover_node`.
    pub async fn run(&self, ctx: TaskContext) -> Result<Value, TaskError> {
        let input: RecoverNode = ctx.payload_as()?;
        let task_id = ctx.task_id().to_string();
        let actor = ctx.worker().to_owned();
        let node =
            node::Entity::find_by_id(input.node_id).one(&self.db).await.map_err(retryable)?.ok_or_else(|| {
                TaskError::fatal(format!("node {} (id {}) no longer exists", input.node, input.node_id))
            })?;
        let started = Instant::now();

        // 0. A planned shutdown: maintenance, disabled, powered off, seen down by Nova.
        if input.shutdown {
            let _: Value = ctx.step("shutdown", "", || self.shutdown(&input, &node, &actor, &task_id)).await?;
        }

        // 1. Isolation check.
        let isolation: Option<IsolationVerdict> =
            ctx.step("isolation_check", "", || self.isolation_check(&input, &node, &actor, &task_id)).await?;
        if let Some(verdict) = &isolation
            && verdict.alive
        {
            return Ok(json!({ "outcome": "withheld", "reason": verdict.reason }));
        }

        // 2. Claim the node.
        let claimed: Result<(), String> = ctx.step("claim", "", || self.claim(&input, &actor, &task_id)).await?;
        if let Err(reason) = claimed {
            return Ok(json!({ "outcome": "abandoned", "reason": reason }));
        }

        // 3. Fence.
        let target = FenceTarget { node_id: node.id, node: node.name.clone() };
        let fenced: Value = ctx.step("fence", "", || self.fence(&input, &target, &actor, &task_id)).await?;

        // 4. Force down.
        ctx.step("force_down", "", || self.force_down(&node, &actor, &task_id)).await?;

        // 5. Reserve hosts bound to this node, when the others cannot hold its servers; plan.
        let _: Vec<String> = ctx.step("reserve", "", || self.bring_up_reserves(&node, &actor, &task_id)).await?;
        let plan: EvacuationPlan = ctx.step("plan", "", || self.plan(&node, &actor, &task_id)).await?;

        // 6. Evacuate group by group.
        let priorities: BTreeMap<String, u32> = plan
            .groups
            .iter()
            .flat_map(|group| group.servers.iter().map(move |server| (server.id.clone(), group.priority)))
            .collect();
        for group in &plan.groups {
            let snapshot = tokio::sync::OnceCell::new();
            let requests = futures::stream::iter(group.servers.clone())
                .map(|server: PlannedServer| {
                    let (ctx, host, input, snapshot) = (ctx.clone(), node.name.clone(), input.clone(), &snapshot);
                    async move {
                        ctx.step("evacuate", &server.id, || {
                            self.request_evacuation(&host, &input, &server, snapshot, &group.servers)
                        })
                        .await
                    }
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect::<Vec<_>>()
                .await;
            for request in requests {
                request?;
            }
            let target = group.priority.to_string();
            let _: Vec<ServerOutcome> = ctx
                .step("await_group", &target, || async {
                    Ok(self
                        .await_servers(&node.name, &input, &group.servers, &priorities, Some(self.group_deadline()))
                        .await)
                })
                .await?;
        }

        // 7. Everything back?
        let everything: Vec<PlannedServer> = plan.groups.iter().flat_map(|g| g.servers.iter().cloned()).collect();
        let outcomes: Vec<ServerOutcome> = ctx
            .step("await_all", "", || async {
                Ok(self.await_servers(&node.name, &input, &everything, &priorities, None).await)
            })
            .await?;
        let failed: Vec<&ServerOutcome> = outcomes.iter().filter(|outcome| !outcome.ok).collect();
        // Exported by the worker's `/metrics` (counted once per run that reaches this point).
        metrics::counter!("aos_evacuations_total", "outcome" => "recovered")
            .increment((outcomes.len() - failed.len()) as u64);
        metrics::counter!("aos_evacuations_total", "outcome" => "failed").increment(failed.len() as u64);
        metrics::histogram!("aos_recovery_duration_seconds").record(started.elapsed().as_secs_f64());
        let summary = json!({
            "outcome": if failed.is_empty() { "evacuated" } else { "evacuation_failed" },
            "fence": fenced,
            "servers": outcomes,
            "skipped": plan.skipped,
            "capacity": plan.capacity,
            "took_ms": started.elapsed().as_millis() as u64,
        });
        if failed.is_empty() {
            store::transition(
                &self.db,
                node.id,
                &[NodeState::Evacuating],
                NodeState::Evacuated,
                &actor,
                &format!("{} server(s) evacuated in their prior state", outcomes.len()),
                Some(&task_id),
                json!({ "servers": outcomes.len(), "skipped": plan.skipped.len() }),
            )
            .await
            .map_err(retryable)?;
            let mut summary = summary;
            if self.settings.restart_after_evacuation && fenced["fenced"] == Value::Bool(true) {
                let restart: Value = ctx.step("restart", "", || self.restart(&node, &actor, &task_id)).await?;
                summary["restart"] = restart;
            }
            Ok(summary)
        } else {
            let names: Vec<&str> = failed.iter().map(|outcome| outcome.name.as_str()).collect();
            let message = format!(
                "{} of {} server(s) of {} not recovered: {}",
                failed.len(),
                outcomes.len(),
                node.name,
                names.join(", ")
            );
            self.fail_to(
                node.id,
                NodeState::Evacuating,
                NodeState::EvacuationFailed,
                ("evacuation_failed", "critical"),
                &message,
                &actor,
                &task_id,
                summary.clone(),
                input.down_since,
            )
            .await?;
            Err(TaskError::Fatal(message))
        }
    }

    fn group_deadline(&self) -> Instant {
        Instant::now() + self.settings.prioritized_evacuation_timeout
    }

    async fn isolation_check(
        &self,
        input: &RecoverNode,
        node: &node::Model,
        actor: &str,
        task_id: &str,
    ) -> Result<Option<IsolationVerdict>, TaskError> {
        let Some(settings) = &self.settings.isolation else {
            return Ok(None);
        };
        if input.manual {
            return Ok(None);
        }
        let window = chrono::Duration::from_std(self.settings.power_explains_within).map_err(TaskError::fatal)?;
        if let Some(operation) = crate::fence::explaining_power_operation(&self.db, node.id, input.down_since, window)
            .await
            .map_err(retryable)?
        {
            let reason = format!(
                "isolation check skipped: our own power operation '{}' at {} explains the down",
                operation.operation,
                operation.requested_at.to_rfc3339()
            );
            self.event(node.id, "isolation_check", actor, &reason, task_id, Value::Null).await?;
            return Ok(None);
        }
        // The instances that should be running there: a stopped server is not expected to run.
        let instances: BTreeSet<String> = self
            .cloud
            .servers_on_host(&node.name)
            .await
            .map_err(cloud_error)?
            .into_iter()
            .filter(|server| crate::plan::expected_status(server) == "ACTIVE")
            .map(|server| server.id)
            .collect();
        let verdict = crate::isolation::check(
            self.state_files.as_ref(),
            settings,
            node.id,
            &node.name,
            input.down_since,
            &instances,
        )
        .await;
        let details = serde_json::to_value(&verdict).unwrap_or(Value::Null);
        if verdict.alive {
            let message =
                format!("{} is alive but cut off from the control plane: not evacuated; {}", node.name, verdict.reason);
            self.event(node.id, "isolated", actor, &message, task_id, details.clone()).await?;
            store::raise_alarm(
                &self.db,
                "node_isolated",
                "critical",
                Some(node.id),
                &message,
                details,
                input.down_since,
            )
            .await
            .map_err(retryable)?;
        } else {
            self.event(node.id, "isolation_check", actor, &verdict.reason, task_id, details).await?;
        }
        Ok(Some(verdict))
    }

    async fn claim(&self, input: &RecoverNode, actor: &str, task_id: &str) -> Result<Result<(), String>, TaskError> {
        let from: &[NodeState] = if input.manual {
            &[
                NodeState::Up,
                NodeState::Suspect,
                NodeState::Down,
                NodeState::Maintenance,
                NodeState::FenceFailed,
                NodeState::EvacuationFailed,
            ]
        } else {
            &[NodeState::Down]
        };
        if !input.manual {
            // The storm guard once more: more nodes may have gone down since the decision.
            let down = node::Entity::find()
                .filter(node::Column::IsReserve.eq(false))
                .filter(node::Column::RemovedFromNova.eq(false))
                .filter(node::Column::State.is_in(crate::machine::DOWN_STATES.iter().copied()))
                .count(&self.db)
                .await
                .map_err(retryable)?;
            if self.settings.max_down_hosts == 0 || down > u64::from(self.settings.max_down_hosts) {
                let message = format!(
                    "storm guard at the start of recovery: {down} nodes down, [node_tracker] max_down_hosts = {}; \
                     nothing done",
                    self.settings.max_down_hosts
                );
                self.event(input.node_id, "evacuation_held", actor, &message, task_id, Value::Null).await?;
                store::raise_alarm(
                    &self.db,
                    "storm_guard",
                    "critical",
                    Some(input.node_id),
                    &message,
                    Value::Null,
                    input.down_since,
                )
                .await
                .map_err(retryable)?;
                return Ok(Err(message));
            }
        }
        let reason = if input.manual { "recovery started by an operator" } else { "recovery started" };
        let moved = store::transition(
            &self.db,
            input.node_id,
            from,
            NodeState::Fencing,
            actor,
            reason,
            Some(task_id),
            json!({ "manual": input.manual, "skip_fence": input.skip_fence }),
        )
        .await
        .map_err(retryable)?;
        if moved {
            Ok(Ok(()))
        } else {
            let current = node::Entity::find_by_id(input.node_id).one(&self.db).await.map_err(retryable)?;
            let state = current.map(|n| n.state.to_string()).unwrap_or_else(|| "deleted".into());
            Ok(Err(format!("node {} is {state} now, not down: nothing done", input.node)))
        }
    }

    async fn fence(
        &self,
        input: &RecoverNode,
        target: &FenceTarget,
        actor: &str,
        task_id: &str,
    ) -> Result<Value, TaskError> {
        if input.skip_fence {
            let reason = "fencing skipped by the operator (node evacuate --skip-fence)";
            self.event(target.node_id, "fence_skipped", actor, reason, task_id, Value::Null).await?;
            return Ok(json!({ "fenced": false, "reason": reason }));
        }
        match self.fencer.has_power_device(target).await {
            Ok(false) => {
                let reason = "no power device: the node cannot be fenced; relying on Nova's forced_down";
                self.event(target.node_id, "fence_skipped", actor, reason, task_id, Value::Null).await?;
                return Ok(json!({ "fenced": false, "reason": reason }));
            }
            Ok(true) => {}
            Err(error) => {
                return Err(TaskError::retryable(format!("reading the power devices of {}: {error}", target.node)));
            }
        }
        match self.fencer.fence(target, actor, Some(task_id)).await {
            Ok(report) => {
                let reason = format!("powered off and verified off through {} in {} ms", report.device, report.took_ms);
                store::transition(
                    &self.db,
                    target.node_id,
                    &[NodeState::Fencing],
                    NodeState::Fenced,
                    actor,
                    &reason,
                    Some(task_id),
                    serde_json::to_value(&report).unwrap_or(Value::Null),
                )
                .await
                .map_err(retryable)?;
                Ok(json!({ "fenced": true, "report": report }))
            }
            Err(FenceError::NoPowerDevice(_)) => {
                let reason = "no power device: the node cannot be fenced; relying on Nova's forced_down";
                self.event(target.node_id, "fence_skipped", actor, reason, task_id, Value::Null).await?;
                Ok(json!({ "fenced": false, "reason": reason }))
            }
            Err(error @ FenceError::Failed { .. }) => {
                let message = format!(
                    "{error}; evacuation stopped (the node may still run its servers). After checking the node is \
                     off: `aos-cloud-manager node evacuate {} --skip-fence`",
                    target.node
                );
                self.fail_to(
                    target.node_id,
                    NodeState::Fencing,
                    NodeState::FenceFailed,
                    ("fence_failed", "critical"),
                    &message,
                    actor,
                    task_id,
                    Value::Null,
                    input.down_since,
                )
                .await?;
                Err(TaskError::Fatal(message))
            }
        }
    }

    async fn force_down(&self, node: &node::Model, actor: &str, task_id: &str) -> Result<(), TaskError> {
        let hosts = self.cloud.compute_hosts().await.map_err(cloud_error)?;
        let Some(service) = hosts.iter().find(|host| host.host == node.name) else {
            return Err(TaskError::fatal(format!("Nova lists no nova-compute service for {}", node.name)));
        };
        if !service.forced_down {
            self.cloud.set_forced_down(&service.service_id, true).await.map_err(cloud_error)?;
        }
        self.event(
            node.id,
            "forced_down",
            actor,
            "nova-compute forced down in Nova",
            task_id,
            json!({ "service_id": service.service_id }),
        )
        .await
    }

    async fn plan(&self, node: &node::Model, actor: &str, task_id: &str) -> Result<EvacuationPlan, TaskError> {
        let servers = self.cloud.servers_on_host(&node.name).await.map_err(cloud_error)?;
        let capacities = self.capacities_for(node).await?;
        let plan = crate::plan::plan(&node.name, &servers, &capacities, self.settings.default_priority);
        let count: usize = plan.groups.iter().map(|group| group.servers.len()).sum();
        let details = serde_json::to_value(&plan).unwrap_or(Value::Null);
        if !plan.capacity.sufficient() {
            let message = format!(
                "capacity short for the servers of {}: {} of {count} do not fit on the remaining hosts \
                 (reserve hosts are not configured for this node)",
                node.name,
                plan.capacity.unplaced.len()
            );
            store::raise_alarm(
                &self.db,
                "capacity_short",
                "warning",
                Some(node.id),
                &message,
                details.clone(),
                Utc::now(),
            )
            .await
            .map_err(retryable)?;
        }
        let reason = format!(
            "evacuating {count} server(s) in {} priority group(s); {} left in place (priority 0)",
            plan.groups.len(),
            plan.skipped.len()
        );
        store::transition(
            &self.db,
            node.id,
            &[NodeState::Fencing, NodeState::Fenced],
            NodeState::Evacuating,
            actor,
            &reason,
            Some(task_id),
            details,
        )
        .await
        .map_err(retryable)?;
        Ok(plan)
    }

    async fn shutdown(
        &self,
        input: &RecoverNode,
        node: &node::Model,
        actor: &str,
        task_id: &str,
    ) -> Result<Value, TaskError> {
        store::transition(
            &self.db,
            node.id,
            &[NodeState::Up, NodeState::Suspect, NodeState::Recovering],
            NodeState::Maintenance,
            actor,
            "planned shutdown: maintenance (the tracker leaves the node alone)",
            Some(task_id),
            Value::Null,
        )
        .await
        .map_err(retryable)?;
        let current = node::Entity::find_by_id(node.id).one(&self.db).await.map_err(retryable)?;
        if current.as_ref().map(|n| n.state) != Some(NodeState::Maintenance) {
            return Err(TaskError::fatal(format!(
                "node {} is {}: a planned shutdown needs it up or in maintenance",
                node.name,
                current.map(|n| n.state.to_string()).unwrap_or_else(|| "deleted".into())
            )));
        }
        let hosts = self.cloud.compute_hosts().await.map_err(cloud_error)?;
        let service = hosts
            .iter()
            .find(|host| host.host == node.name)
            .ok_or_else(|| TaskError::fatal(format!("Nova lists no nova-compute service for {}", node.name)))?;
        if service.enabled {
            self.cloud
                .set_service_enabled(&service.service_id, false, "aos-cloud-manager: planned shutdown")
                .await
                .map_err(cloud_error)?;
        }
        let target = FenceTarget { node_id: node.id, node: node.name.clone() };
        match self.fencer.soft_power_off(&target, actor, Some(task_id)).await {
            Ok(()) => {}
            Err(FenceError::NoPowerDevice(_)) => {
                return Err(TaskError::fatal(format!(
                    "node {} has no power device: it cannot be shut down",
                    node.name
                )));
            }
            Err(error) => return Err(TaskError::retryable(error)),
        }
        for tick in 1..=self.settings.shutdown_max_tick.max(1) {
            let hosts = self.cloud.compute_hosts().await.map_err(cloud_error)?;
            if hosts.iter().any(|host| host.host == node.name && !host.up) {
                let reason = format!("powered off; Nova sees its nova-compute down after {tick} check(s)");
                self.event(node.id, "shutdown", actor, &reason, task_id, Value::Null).await?;
                return Ok(json!({ "ticks": tick, "skip_fence": input.skip_fence }));
            }
            tokio::time::sleep(self.settings.shutdown_interval).await;
        }
        Err(TaskError::fatal(format!(
            "{} is still reported up by Nova after [power] shutdown_max_tick = {} checks every {:?}: not evacuated",
            node.name, self.settings.shutdown_max_tick, self.settings.shutdown_interval
        )))
    }

    async fn capacities_for(&self, node: &node::Model) -> Result<Vec<crate::cloud::HostCapacity>, TaskError> {
        crate::cloud::capacities_near(self.cloud.as_ref(), &node.name).await.map_err(cloud_error)
    }

    /// Brings up the reserve hosts of `node` (those bound to it, highest priority first, then
    /// the powered-off pool) while the other hosts cannot hold its servers: PXE boot prepared
    /// when the reserve has a boot MAC, power on, wait for its nova-compute within
    /// `timeout_reserv_node_up`, enable it, and add it to the failed host's aggregates.
    async fn bring_up_reserves(
        &self,
        node: &node::Model,
        actor: &str,
        task_id: &str,
    ) -> Result<Vec<String>, TaskError> {
        let mut brought_up = Vec::new();
        let reserves = crate::reserve::reserves_of(&self.db, node.id).await.map_err(retryable)?;
        if reserves.is_empty() {
            return Ok(brought_up);
        }
        let servers = self.cloud.servers_on_host(&node.name).await.map_err(cloud_error)?;
        for reserve in reserves {
            let capacities = self.capacities_for(node).await?;
            let plan = crate::plan::plan(&node.name, &servers, &capacities, self.settings.default_priority);
            if plan.capacity.sufficient() {
                break;
            }
            if !store::transition(
                &self.db,
                reserve.id,
                &[NodeState::Reserve],
                NodeState::ReserveBooting,
                actor,
                &format!("capacity short for the servers of {}: booting this reserve host", node.name),
                Some(task_id),
                json!({ "for": node.name }),
            )
            .await
            .map_err(retryable)?
            {
                continue;
            }
            let target = FenceTarget { node_id: reserve.id, node: reserve.name.clone() };
            if let Some(mac) = &reserve.boot_mac
                && let Err(error) = self.fencer.prepare_network_boot(&target, mac, actor, Some(task_id)).await
            {
                let reason = format!("its PXE boot could not be prepared: {error}");
                self.reserve_failed(&reserve, node, &reason, actor, task_id).await?;
                continue;
            }
            if let Err(error) = self.fencer.power_on(&target, actor, Some(task_id)).await {
                self.reserve_failed(&reserve, node, &format!("power on failed: {error}"), actor, task_id).await?;
                continue;
            }
            let deadline = Instant::now() + self.settings.reserve_up_timeout;
            let service = loop {
                let hosts = self.cloud.compute_hosts().await.map_err(cloud_error)?;
                if let Some(service) = hosts.into_iter().find(|host| host.host == reserve.name && host.up) {
                    break Some(service);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(self.settings.poll_interval).await;
            };
            let Some(service) = service else {
                let reason = "its nova-compute did not come up within [node_tracker] timeout_reserv_node_up";
                self.reserve_failed(&reserve, node, reason, actor, task_id).await?;
                continue;
            };
            if let Some(mac) = &reserve.boot_mac
                && let Err(error) = self.fencer.finish_network_boot(&target, mac).await
            {
                // It booted; a file left behind only makes its next boot a network boot too.
                tracing::warn!(reserve = %reserve.name, %error, "PXE file of a booted reserve host not removed");
            }
            self.cloud.set_service_enabled(&service.service_id, true, "").await.map_err(cloud_error)?;
            for aggregate in self.cloud.aggregates_of(&node.name).await.map_err(cloud_error)? {
                self.cloud.add_to_aggregate(aggregate.id, &reserve.name).await.map_err(cloud_error)?;
            }
            store::transition(
                &self.db,
                reserve.id,
                &[NodeState::ReserveBooting],
                NodeState::Up,
                actor,
                &format!(
                    "reserve host in service for {}: powered on, nova-compute up, enabled, in its aggregates",
                    node.name
                ),
                Some(task_id),
                Value::Null,
            )
            .await
            .map_err(retryable)?;
            brought_up.push(reserve.name.clone());
        }
        Ok(brought_up)
    }

    async fn reserve_failed(
        &self,
        reserve: &node::Model,
        node: &node::Model,
        reason: &str,
        actor: &str,
        task_id: &str,
    ) -> Result<(), TaskError> {
        let message = format!("reserve host {} could not be brought up for {}: {reason}", reserve.name, node.name);
        self.fail_to(
            reserve.id,
            NodeState::ReserveBooting,
            NodeState::Reserve,
            ("reserve_failed", "warning"),
            &message,
            actor,
            task_id,
            Value::Null,
            Utc::now(),
        )
        .await?;
        Ok(())
    }

    /// `allow_host_auto_power_off`: powers the fenced host on; once its nova-compute ran and
    /// cleaned up the evacuated servers, Nova accepts clearing forced_down, and the node goes
    /// to `recovering` (the tracker brings it up after `mutex_up` observations). A host that
    /// does not come back within `host_restart_timeout` stays `evacuated`, forced down.
    async fn restart(&self, node: &node::Model, actor: &str, task_id: &str) -> Result<Value, TaskError> {
        let moved = store::transition(
            &self.db,
            node.id,
            &[NodeState::Evacuated],
            NodeState::PowerCycling,
            actor,
            "restarting the host ([node_tracker] allow_host_auto_power_off)",
            Some(task_id),
            Value::Null,
        )
        .await
        .map_err(retryable)?;
        if !moved {
            return Ok(json!({ "restarted": false, "reason": "the node is no longer evacuated" }));
        }
        let target = FenceTarget { node_id: node.id, node: node.name.clone() };
        let started = Instant::now();
        let failure = match self.fencer.power_on(&target, actor, Some(task_id)).await {
            Err(error) => Some(format!("power on failed: {error}")),
            Ok(_) => {
                let deadline = started + self.settings.host_restart_timeout;
                let mut last;
                loop {
                    let hosts = self.cloud.compute_hosts().await.map_err(cloud_error)?;
                    let service = hosts.into_iter().find(|host| host.host == node.name);
                    match service {
                        Some(service) => match self.cloud.set_forced_down(&service.service_id, false).await {
                            Ok(()) => break None,
                            Err(error) => last = error.to_string(),
                        },
                        None => last = "Nova lists no nova-compute service for it".into(),
                    }
                    if Instant::now() >= deadline {
                        break Some(format!("not back within [node_tracker] host_restart_timeout: {last}"));
                    }
                    tokio::time::sleep(self.settings.poll_interval).await;
                }
            }
        };
        match failure {
            None => {
                store::transition(
                    &self.db,
                    node.id,
                    &[NodeState::PowerCycling],
                    NodeState::Recovering,
                    actor,
                    "host powered on, evacuated servers cleaned up by its nova-compute, forced_down cleared",
                    Some(task_id),
                    json!({ "took_ms": started.elapsed().as_millis() as u64 }),
                )
                .await
                .map_err(retryable)?;
                Ok(json!({ "restarted": true, "took_ms": started.elapsed().as_millis() as u64 }))
            }
            Some(reason) => {
                let message = format!("{} was not returned to service: {reason}; it stays forced down", node.name);
                self.fail_to(
                    node.id,
                    NodeState::PowerCycling,
                    NodeState::Evacuated,
                    ("host_restart_failed", "warning"),
                    &message,
                    actor,
                    task_id,
                    Value::Null,
                    Utc::now(),
                )
                .await?;
                Ok(json!({ "restarted": false, "reason": reason }))
            }
        }
    }

    /// Asks Nova to evacuate `server` unless that already happened in this incident (checked
    /// on the group's snapshot, taken once when the group's first step runs).
    async fn request_evacuation(
        &self,
        host: &str,
        input: &RecoverNode,
        server: &PlannedServer,
        snapshot: &tokio::sync::OnceCell<Option<GroupSnapshot>>,
        group: &[PlannedServer],
    ) -> Result<EvacuationRequest, TaskError> {
        let known = snapshot.get_or_init(|| self.group_snapshot(host, input, group)).await;
        let already = match known.as_ref().and_then(|known| known.servers.get(&server.id).map(|answer| (known, answer)))
        {
            Some((known, answer)) => match moved_or_gone(host, answer)? {
                Some(note) => Some(note),
                None => recorded_evacuation(&known.records, &server.id),
            },
            None => self.already_evacuating(host, input, &server.id).await?,
        };
        if let Some(note) = already {
            return Ok(EvacuationRequest { requested: false, requests: 0, note });
        }
        let mut requests = 0;
        loop {
            requests += 1;
            match self.cloud.evacuate(&server.id).await {
                Ok(()) => {
                    return Ok(EvacuationRequest { requested: true, requests, note: "evacuation requested".into() });
                }
                Err(error) if requests <= self.settings.evacuation_retries => {
                    tracing::warn!(server = %server.id, error = %error, requests, "evacuation request failed; retrying");
                    tokio::time::sleep(self.settings.poll_interval).await;
                    if let Some(note) = self.already_evacuating(host, input, &server.id).await? {
                        return Ok(EvacuationRequest { requested: false, requests, note });
                    }
                }
                Err(error) => {
                    return Ok(EvacuationRequest {
                        requested: false,
                        requests,
                        note: format!("evacuation refused after {requests} request(s): {error}"),
                    });
                }
            }
        }
    }

    /// `Some(why)` when the server needs no evacuation request now (asks Nova for it).
    async fn already_evacuating(
        &self,
        host: &str,
        input: &RecoverNode,
        server_id: &str,
    ) -> Result<Option<String>, TaskError> {
        let server = self.cloud.server(server_id).await;
        if let Some(note) = moved_or_gone(host, &server)? {
            return Ok(Some(note));
        }
        let records = self.cloud.evacuations_from(host, input.down_since).await.map_err(cloud_error)?;
        Ok(recorded_evacuation(&records, server_id))
    }

    /// What Nova says of a group's servers and of the host's evacuations, asked once for the
    /// group (two calls instead of two per server) when its first evacuation step runs; `None`
    /// when asking failed (each step then asks for its own server).
    async fn group_snapshot(&self, host: &str, input: &RecoverNode, group: &[PlannedServer]) -> Option<GroupSnapshot> {
        let ids: Vec<String> = group.iter().map(|server| server.id.clone()).collect();
        let servers = self.cloud.servers_now(&ids, input.down_since).await;
        match self.cloud.evacuations_from(host, input.down_since).await {
            Ok(records) => Some(GroupSnapshot { servers, records }),
            Err(error) => {
                tracing::warn!(error = %error, "reading Nova's evacuation records failed; checking server by server");
                None
            }
        }
    }

    /// Polls the servers until each is on another host in its expected state, failed for
    /// good, or the deadline (`None`: the `retries_wait_for_vm_status` budget) passes.
    async fn await_servers(
        &self,
        host: &str,
        input: &RecoverNode,
        servers: &[PlannedServer],
        priorities: &BTreeMap<String, u32>,
        deadline: Option<Instant>,
    ) -> Vec<ServerOutcome> {
        let mut pending: BTreeMap<String, &PlannedServer> = servers.iter().map(|s| (s.id.clone(), s)).collect();
        let mut outcomes: BTreeMap<String, ServerOutcome> = BTreeMap::new();
        let mut retries: BTreeMap<String, u32> = BTreeMap::new();
        let mut polls = 0;
        while !pending.is_empty() {
            polls += 1;
            let ids: Vec<String> = pending.keys().cloned().collect();
            // One bulk answer per poll (Nova: the servers changed since the failure), and
            // Nova's evacuation records of the host at most once per poll, for stragglers.
            let mut answers = self.cloud.servers_now(&ids, input.down_since).await;
            let mut records: Option<Vec<EvacuationRecord>> = None;
            for id in ids {
                let planned = pending[&id];
                let priority = priorities.get(&id).copied().unwrap_or(0);
                let outcome = |ok: bool, server: Option<&CloudServer>, detail: String| ServerOutcome {
                    id: planned.id.clone(),
                    name: planned.name.clone(),
                    priority,
                    ok,
                    host: server.and_then(|s| s.host.clone()),
                    status: server.map(|s| s.status.clone()).unwrap_or_default(),
                    detail,
                };
                let answer = answers
                    .remove(&id)
                    .unwrap_or_else(|| Err(CloudError::Other(format!("the cloud did not answer for server {id}"))));
                match answer {
                    Err(CloudError::NotFound(_)) => {
                        outcomes.insert(id.clone(), outcome(true, None, "deleted meanwhile".into()));
                        pending.remove(&id);
                    }
                    Err(error) => tracing::warn!(server = %id, error = %error, "polling a server failed"),
                    Ok(server) => {
                        let moved = server.host.as_deref().is_some_and(|h| h != host);
                        if moved && server.status == planned.expected_status && server.task_state.is_none() {
                            outcomes.insert(id.clone(), outcome(true, Some(&server), "back in its prior state".into()));
                            pending.remove(&id);
                        } else if server.status == "ERROR" && server.task_state.is_none() {
                            let used = retries.entry(id.clone()).or_insert(0);
                            if *used < self.settings.evacuation_retries && !moved {
                                *used += 1;
                                tracing::warn!(server = %id, retry = *used, "evacuation ended in ERROR; asking again");
                                if let Err(error) = self.cloud.evacuate(&id).await {
                                    tracing::warn!(server = %id, error = %error, "evacuation retry refused");
                                }
                            } else {
                                outcomes.insert(
                                    id.clone(),
                                    outcome(false, Some(&server), format!("ERROR after {} retr(ies)", *used)),
                                );
                                pending.remove(&id);
                            }
                        } else if !moved && server.task_state.is_none() {
                            // Not evacuated yet and nothing under way: an earlier request may
                            // have been refused; ask once more if Nova has no record of it.
                            if records.is_none() {
                                match self.cloud.evacuations_from(host, input.down_since).await {
                                    Ok(found) => records = Some(found),
                                    Err(error) => {
                                        tracing::warn!(error = %error, "reading Nova's evacuation records failed");
                                        continue;
                                    }
                                }
                            }
                            let recorded =
                                records.iter().flatten().any(|record| record.server_id == id && !record.failed());
                            let used = retries.entry(id.clone()).or_insert(0);
                            if !recorded && *used < self.settings.evacuation_retries {
                                *used += 1;
                                let _ = self.cloud.evacuate(&id).await;
                            }
                        }
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            let out_of_time = match deadline {
                Some(deadline) => Instant::now() >= deadline,
                None => polls >= self.settings.retries_wait_for_vm_status,
            };
            if out_of_time {
                break;
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
        for (id, planned) in pending {
            let detail = match deadline {
                Some(_) => "not back within [host_tasks] prioritized_evacuation_timeout".to_owned(),
                None => format!("not back after {} polls ([host_tasks] retries_wait_for_vm_status)", polls),
            };
            outcomes.insert(
                id.clone(),
                ServerOutcome {
                    id: planned.id.clone(),
                    name: planned.name.clone(),
                    priority: priorities.get(&id).copied().unwrap_or(0),
                    ok: false,
                    host: None,
                    status: String::new(),
                    detail,
                },
            );
        }
        outcomes.into_values().collect()
    }

    /// A step that ends badly: the conditional transition, then an alarm naming why.
    #[allow(clippy::too_many_arguments)]
    async fn fail_to(
        &self,
        node_id: i64,
        from: NodeState,
        to: NodeState,
        alarm: (&str, &str),
        message: &str,
        actor: &str,
        task_id: &str,
        details: Value,
        since: chrono::DateTime<Utc>,
    ) -> Result<(), TaskError> {
        store::transition(&self.db, node_id, &[from], to, actor, message, Some(task_id), details.clone())
            .await
            .map_err(retryable)?;
        store::raise_alarm(&self.db, alarm.0, alarm.1, Some(node_id), message, details, since)
            .await
            .map_err(retryable)?;
        Ok(())
    }

    async fn event(
        &self,
        node_id: i64,
        kind: &str,
        actor: &str,
        reason: &str,
        task_id: &str,
        details: Value,
    ) -> Result<(), TaskError> {
        store::record_event(
            &self.db,
            store::Event { node_id, kind, from: None, to: None, actor, reason, task_id: Some(task_id), details },
            Utc::now(),
        )
        .await
        .map_err(retryable)
    }
}

/// Nova's answers about one evacuation group, asked once (see `Recovery::group_snapshot`).
struct GroupSnapshot {
    servers: BTreeMap<String, Result<CloudServer, CloudError>>,
    records: Vec<EvacuationRecord>,
}

/// `Some(why)` when the server is no longer on `host` (or no longer exists): it needs no
/// evacuation request.
fn moved_or_gone(host: &str, server: &Result<CloudServer, CloudError>) -> Result<Option<String>, TaskError> {
    match server {
        Err(CloudError::NotFound(_)) => Ok(Some("the server no longer exists".into())),
        Err(error) => Err(cloud_error(error.clone())),
        Ok(server) if server.host.as_deref() != Some(host) => {
            Ok(Some(format!("already on {}", server.host.as_deref().unwrap_or("no host"))))
        }
        Ok(_) => Ok(None),
    }
}

/// `Some(why)` when Nova already records an evacuation of the server that did not fail.
fn recorded_evacuation(records: &[EvacuationRecord], server_id: &str) -> Option<String> {
    records
        .iter()
        .find(|record| record.server_id == server_id && !record.failed())
        .map(|record| format!("an evacuation is already recorded by Nova ({})", record.status))
}
