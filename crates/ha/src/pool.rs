//! The powered-off reserve pool (issue 5, ADR 0010): hosts an operator let into the pool
//! (`reserve pool add NODE`) that stay without instances for `[node_sync] reserve_interval` are
//! disabled in Nova and powered off by a `park_node` task; they wait in state `reserve`, and the
//! recovery of a failed host brings them up (after the reserves bound to it) when the other
//! hosts cannot hold its servers.
//!
//! Membership is opt-in per host rather than global: with the reference default (60 s) a
//! global rule would power off every freshly added or freshly evacuated empty hypervisor.
//!
//! Safety, in order: a host is parked only while no recovery is under way anywhere (its
//! capacity may be what the evacuation needs), only with a power device (it must come back),
//! and only if it is still empty once Nova's scheduler can no longer place anything on it
//! (disabled first, checked again after).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use aos_db::entity::{NodeState, node};
use aos_jobs::{NewTask, TaskContext, TaskError, TaskId};

use crate::cloud::Cloud;
use crate::fence::{FenceError, FenceTarget};
use crate::recovery::{Recovery, cloud_error, retryable};
use crate::store;

/// The task kind that moves an idle pool member to the powered-off reserve pool.
pub const PARK_NODE: &str = "park_node";

/// The reason Nova shows on the disabled service of a parked host.
pub const DISABLED_REASON: &str = "aos-cloud-manager: idle, in the powered-off reserve pool";

/// The input of a `park_node` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkNode {
    pub node_id: i64,
    pub node: String,
    /// When the beat first saw the host empty (part of the task's idempotency key).
    pub idle_since: DateTime<Utc>,
}

/// What one pool round did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PoolReport {
    /// Pool members seen without instances this round.
    pub idle: Vec<String>,
    /// Parking requested this round: (node, task id).
    pub parks: Vec<(String, String)>,
    /// Parking was due but held: (node, why).
    pub held: Vec<(String, String)>,
    #[serde(skip)]
    pub to_publish: Vec<TaskId>,
}

/// States in which a node's recovery is under way: no host is parked meanwhile.
const RECOVERY_UNDER_WAY: &[NodeState] = &[
    NodeState::Down,
    NodeState::Fencing,
    NodeState::Fenced,
    NodeState::Evacuating,
    NodeState::PowerCycling,
    NodeState::ReserveBooting,
];

async fn recoveries_under_way<C: sea_orm::ConnectionTrait>(conn: &C) -> Result<u64, sea_orm::DbErr> {
    node::Entity::find().filter(node::Column::State.is_in(RECOVERY_UNDER_WAY.iter().copied())).count(conn).await
}

/// One pass of the beat (with node sync): which pool members are idle, since when, and a
/// `park_node` task for those idle for `reserve_interval`. `lease` guards the writes.
pub async fn pool_round(
    db: &aos_db::DatabaseConnection,
    cloud: &dyn Cloud,
    reserve_interval: Duration,
    lease: Option<(&str, i64)>,
    actor: &str,
) -> anyhow::Result<PoolReport> {
    let mut report = PoolReport::default();
    let members: Vec<node::Model> = node::Entity::find()
        .filter(node::Column::PoolMember.eq(true))
        .filter(node::Column::State.eq(NodeState::Up))
        .filter(node::Column::RemovedFromNova.eq(false))
        .order_by_asc(node::Column::Name)
        .all(db)
        .await?;
    if members.is_empty() {
        return Ok(report);
    }
    // Nova's view first, outside the transaction (one call per member: pools are small).
    let mut observed = Vec::with_capacity(members.len());
    for member in members {
        let in_service = member.nova_status.as_deref() == Some("enabled") && member.nova_state.as_deref() == Some("up");
        if !in_service {
            observed.push((member, None));
            continue;
        }
        match cloud.servers_on_host(&member.name).await {
            Ok(servers) => observed.push((member, Some(servers.len()))),
            Err(error) => {
                tracing::warn!(node = %member.name, %error, "reserve pool: cannot list the host's servers");
            }
        }
    }
    let now = Utc::now();
    let transaction = aos_db::begin_write(db).await?;
    if let Some((name, generation)) = lease {
        aos_db::guard_lease(&transaction, name, generation).await?;
    }
    let under_way = recoveries_under_way(&transaction).await?;
    for (member, servers) in observed {
        let idle = servers == Some(0);
        let idle_since = match (idle, member.idle_since) {
            (true, Some(since)) => since,
            (true, None) => now,
            (false, _) => {
                if member.idle_since.is_some() {
                    set_idle_since(&transaction, member.id, None).await?;
                }
                continue;
            }
        };
        if member.idle_since.is_none() {
            set_idle_since(&transaction, member.id, Some(now)).await?;
        }
        report.idle.push(member.name.clone());
        let idle_for = (now - idle_since).to_std().unwrap_or_default();
        if idle_for < reserve_interval {
            continue;
        }
        if under_way > 0 {
            let why = format!("{under_way} node(s) being recovered: their servers may need this host");
            report.held.push((member.name.clone(), why));
            continue;
        }
        let payload = ParkNode { node_id: member.id, node: member.name.clone(), idle_since };
        let key = format!("{PARK_NODE}:{}:{}", member.id, idle_since.timestamp_millis());
        let new = NewTask::new(PARK_NODE, serde_json::to_value(&payload)?).node_id(member.id).idempotency_key(key);
        let recorded = aos_jobs::insert_task(&transaction, &new).await?;
        if recorded.created {
            let task_id = recorded.task_id.to_string();
            let reason = format!(
                "no instances for {}s ([node_sync] reserve_interval = {}s): moving to the powered-off reserve pool",
                idle_for.as_secs(),
                reserve_interval.as_secs()
            );
            let event = store::Event {
                node_id: member.id,
                kind: "park_requested",
                from: None,
                to: None,
                actor,
                reason: &reason,
                task_id: Some(&task_id),
                details: json!({ "idle_since": idle_since }),
            };
            store::record_event(&transaction, event, now).await?;
            report.parks.push((member.name.clone(), task_id));
            report.to_publish.push(recorded.task_id);
        }
    }
    transaction.commit().await?;
    Ok(report)
}

async fn set_idle_since<C: sea_orm::ConnectionTrait>(
    conn: &C,
    node_id: i64,
    idle_since: Option<DateTime<Utc>>,
) -> Result<(), sea_orm::DbErr> {
    // `update_many`: a node deleted meanwhile is not an error here.
    node::Entity::update_many()
        .col_expr(node::Column::IdleSince, sea_orm::sea_query::Expr::value(idle_since.map(aos_db::db_time)))
        .filter(node::Column::Id.eq(node_id))
        .exec(conn)
        .await?;
    Ok(())
}

impl Recovery {
    /// The handler of `park_node`: check, disable in Nova, check again, `up` → `reserve`,
    /// power off (soft, then verified off). Every step is resumable; a host that is no longer
    /// idle (or no longer a pool member, or needed by a recovery) is kept in service.
    pub async fn park(&self, ctx: TaskContext) -> Result<Value, TaskError> {
        let input: ParkNode = ctx.payload_as()?;
        let task_id = ctx.task_id().to_string();
        let actor = ctx.worker().to_owned();
        let checked: Result<(), String> = ctx.step("check", "", || self.park_check(&input)).await?;
        if let Err(reason) = checked {
            return self.keep(&input, None, &reason, &actor, &task_id).await;
        }
        let service_id: String = ctx.step("disable", "", || self.park_disable(&input)).await?;
        let rechecked: Result<(), String> = ctx.step("recheck", "", || self.park_check(&input)).await?;
        if let Err(reason) = rechecked {
            return self.keep(&input, Some(&service_id), &reason, &actor, &task_id).await;
        }
        let moved: bool = ctx
            .step("reserve", "", || async {
                let reason = format!(
                    "idle since {}: disabled in Nova ({DISABLED_REASON}), powering off",
                    input.idle_since.to_rfc3339()
                );
                let moved = store::transition(
                    &self.db,
                    input.node_id,
                    &[NodeState::Up],
                    NodeState::Reserve,
                    &actor,
                    &reason,
                    Some(&task_id),
                    json!({ "pool": true }),
                )
                .await
                .map_err(retryable)?;
                set_idle_since(&self.db, input.node_id, None).await.map_err(retryable)?;
                Ok(moved)
            })
            .await?;
        if !moved {
            let reason = "its state changed meanwhile";
            return self.keep(&input, Some(&service_id), reason, &actor, &task_id).await;
        }
        let ticks: Value = ctx.step("power_off", "", || self.park_power_off(&input, &actor, &task_id)).await?;
        Ok(json!({ "outcome": "parked", "power_off": ticks }))
    }

    /// Still a pool member, up, with a power device, no recovery under way, no instances.
    async fn park_check(&self, input: &ParkNode) -> Result<Result<(), String>, TaskError> {
        let Some(node) = node::Entity::find_by_id(input.node_id).one(&self.db).await.map_err(retryable)? else {
            return Ok(Err("the node no longer exists".into()));
        };
        if !node.pool_member {
            return Ok(Err("it is no longer a pool member".into()));
        }
        if node.state != NodeState::Up {
            return Ok(Err(format!("it is {}", node.state)));
        }
        let target = FenceTarget { node_id: node.id, node: node.name.clone() };
        match self.fencer.has_power_device(&target).await {
            Ok(true) => {}
            Ok(false) => return Ok(Err("it has no power device: it could not be powered on again".into())),
            Err(error) => return Err(retryable(error)),
        }
        let under_way = recoveries_under_way(&self.db).await.map_err(retryable)?;
        if under_way > 0 {
            return Ok(Err(format!("{under_way} node(s) being recovered: their servers may need this host")));
        }
        let servers = self.cloud.servers_on_host(&node.name).await.map_err(cloud_error)?;
        if !servers.is_empty() {
            return Ok(Err(format!("it has {} instance(s) now", servers.len())));
        }
        Ok(Ok(()))
    }

    async fn park_disable(&self, input: &ParkNode) -> Result<String, TaskError> {
        let hosts = self.cloud.compute_hosts().await.map_err(cloud_error)?;
        let service = hosts
            .into_iter()
            .find(|host| host.host == input.node)
            .ok_or_else(|| TaskError::fatal(format!("Nova lists no nova-compute service for {}", input.node)))?;
        self.cloud.set_service_enabled(&service.service_id, false, DISABLED_REASON).await.map_err(cloud_error)?;
        Ok(service.service_id)
    }

    /// Soft power-off, wait for Nova to see the service down (`[power] shutdown_interval` x
    /// `shutdown_max_tick`), then power off verified (hard if the OS did not stop in time).
    async fn park_power_off(&self, input: &ParkNode, actor: &str, task_id: &str) -> Result<Value, TaskError> {
        let target = FenceTarget { node_id: input.node_id, node: input.node.clone() };
        let mut seen_down_after = None;
        match self.fencer.soft_power_off(&target, actor, Some(task_id)).await {
            Ok(()) => {
                for tick in 1..=self.settings.shutdown_max_tick.max(1) {
                    let hosts = self.cloud.compute_hosts().await.map_err(cloud_error)?;
                    if hosts.iter().any(|host| host.host == input.node && !host.up) {
                        seen_down_after = Some(tick);
                        break;
                    }
                    tokio::time::sleep(self.settings.shutdown_interval).await;
                }
            }
            Err(FenceError::NoPowerDevice(node)) => {
                return Err(TaskError::fatal(format!("node {node} has no power device: it cannot be parked")));
            }
            Err(error) => tracing::warn!(node = %input.node, %error, "soft power-off failed; powering off hard"),
        }
        let report = self.fencer.fence(&target, actor, Some(task_id)).await.map_err(retryable)?;
        Ok(
            json!({ "nova_down_after_ticks": seen_down_after, "device": report.device, "hard_off_needed": !report.was_already_off }),
        )
    }

    /// Leaves the node in service: enabled again when we had disabled it, idle clock reset.
    async fn keep(
        &self,
        input: &ParkNode,
        disabled_service: Option<&str>,
        reason: &str,
        actor: &str,
        task_id: &str,
    ) -> Result<Value, TaskError> {
        if let Some(service_id) = disabled_service {
            self.cloud.set_service_enabled(service_id, true, "").await.map_err(cloud_error)?;
        }
        set_idle_since(&self.db, input.node_id, None).await.map_err(retryable)?;
        let event = store::Event {
            node_id: input.node_id,
            kind: "park_skipped",
            from: None,
            to: None,
            actor,
            reason: &format!("kept in service: {reason}"),
            task_id: Some(task_id),
            details: Value::Null,
        };
        store::record_event(&self.db, event, Utc::now()).await.map_err(retryable)?;
        Ok(json!({ "outcome": "kept", "reason": reason }))
    }
}
