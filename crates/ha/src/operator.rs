//! Operator commands on nodes (the CLI now, the REST API later): evacuate by hand (with a
//! dry run), maintenance on/off, the per-node evacuation flag, and `recover` after an
//! incident. Each records who did it in the node's timeline.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::json;

use aos_db::entity::{NodeState, node, task};
use aos_jobs::{NewTask, TaskId};

use crate::cloud::Cloud;
use crate::plan::EvacuationPlan;
use crate::store;
use crate::tracker::{RECOVER_NODE, RecoverNode};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no node named {0:?} (see `aos-cloud-manager node list`)")]
    UnknownNode(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Jobs(#[from] aos_jobs::JobsError),
    #[error("the cloud: {0}")]
    Cloud(#[from] crate::cloud::CloudError),
}

pub(crate) async fn node_named(db: &aos_db::DatabaseConnection, name: &str) -> Result<node::Model, OperatorError> {
    node::Entity::find()
        .filter(node::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| OperatorError::UnknownNode(name.to_owned()))
}

/// States from which an operator may evacuate a node.
pub const EVACUABLE: &[NodeState] = &[
    NodeState::Up,
    NodeState::Suspect,
    NodeState::Down,
    NodeState::Maintenance,
    NodeState::FenceFailed,
    NodeState::EvacuationFailed,
];

/// Records a manual `recover_node` task (the caller publishes it, or the sweep does). The
/// storm guard, the policy and the isolation check do not apply: the operator decided.
/// Fencing still happens unless `skip_fence`.
pub async fn request_evacuation(
    db: &aos_db::DatabaseConnection,
    name: &str,
    skip_fence: bool,
    actor: &str,
) -> Result<TaskId, OperatorError> {
    request(db, name, skip_fence, false, actor).await
}

/// `node shutdown NAME`: a planned power-off of a running host, its servers evacuated once
/// Nova sees it down (see [`crate::tracker::RecoverNode::shutdown`]).
pub async fn request_shutdown(
    db: &aos_db::DatabaseConnection,
    name: &str,
    actor: &str,
) -> Result<TaskId, OperatorError> {
    let node = node_named(db, name).await?;
    if !matches!(node.state, NodeState::Up | NodeState::Maintenance | NodeState::Recovering) {
        return Err(OperatorError::Refused(format!(
            "node {name} is {}: only a node that is up or in maintenance can be shut down",
            node.state
        )));
    }
    request(db, name, false, true, actor).await
}

async fn request(
    db: &aos_db::DatabaseConnection,
    name: &str,
    skip_fence: bool,
    shutdown: bool,
    actor: &str,
) -> Result<TaskId, OperatorError> {
    let node = node_named(db, name).await?;
    if !EVACUABLE.contains(&node.state) {
        return Err(OperatorError::Refused(format!(
            "node {name} is {}: a recovery is under way or finished (see `aos-cloud-manager node history {name}`)",
            node.state
        )));
    }
    let running = task::Entity::find()
        .filter(task::Column::NodeId.eq(node.id))
        .filter(task::Column::Kind.eq(RECOVER_NODE))
        .filter(task::Column::State.is_in([aos_db::entity::TaskState::Pending, aos_db::entity::TaskState::Running]))
        .order_by_desc(task::Column::CreatedAt)
        .one(db)
        .await?;
    if let Some(running) = running {
        return Err(OperatorError::Refused(format!(
            "a recovery of {name} is already {} (task {})",
            running.state, running.id
        )));
    }
    let payload = RecoverNode {
        node_id: node.id,
        node: node.name.clone(),
        down_since: Utc::now(),
        skip_fence,
        manual: true,
        shutdown,
    };
    let new =
        NewTask::new(RECOVER_NODE, serde_json::to_value(&payload).map_err(|e| OperatorError::Refused(e.to_string()))?)
            .node_id(node.id);
    let transaction = aos_db::begin_write(db).await.map_err(|e| OperatorError::Refused(e.to_string()))?;
    let recorded = aos_jobs::insert_task(&transaction, &new).await?;
    let task_id = recorded.task_id.to_string();
    store::record_event(
        &transaction,
        store::Event {
            node_id: node.id,
            kind: if shutdown { "shutdown_requested" } else { "evacuation_requested" },
            from: None,
            to: None,
            actor,
            reason: match (shutdown, skip_fence) {
                (true, _) => "shutdown with evacuation requested by an operator",
                (false, true) => "evacuation requested by an operator, fencing skipped",
                (false, false) => "evacuation requested by an operator",
            },
            task_id: Some(&task_id),
            details: json!({ "skip_fence": skip_fence }),
        },
        Utc::now(),
    )
    .await?;
    transaction.commit().await?;
    Ok(recorded.task_id)
}

/// What `node evacuate NAME --dry-run` prints: the plan, without acting.
pub async fn dry_run(
    db: &aos_db::DatabaseConnection,
    cloud: &dyn Cloud,
    name: &str,
    default_priority: u32,
) -> Result<EvacuationPlan, OperatorError> {
    let node = node_named(db, name).await?;
    let servers = cloud.servers_on_host(&node.name).await?;
    let capacities = crate::cloud::capacities_near(cloud, &node.name).await?;
    Ok(crate::plan::plan(&node.name, &servers, &capacities, default_priority))
}

/// `node maintenance NAME on|off`: the tracker leaves a node in maintenance alone.
pub async fn set_maintenance(
    db: &aos_db::DatabaseConnection,
    name: &str,
    on: bool,
    actor: &str,
) -> Result<NodeState, OperatorError> {
    let node = node_named(db, name).await?;
    let (from, to, reason): (&[NodeState], NodeState, &str) = if on {
        (
            &[
                NodeState::Up,
                NodeState::Suspect,
                NodeState::Down,
                NodeState::Recovering,
                NodeState::Evacuated,
                NodeState::FenceFailed,
                NodeState::EvacuationFailed,
            ],
            NodeState::Maintenance,
            "maintenance on (operator)",
        )
    } else {
        // Leaving maintenance: the tracker judges it again from `recovering` (mutex_up up
        // observations before it is up).
        (&[NodeState::Maintenance], NodeState::Recovering, "maintenance off (operator); up after mutex_up observations")
    };
    if node.state == to {
        return Ok(to);
    }
    if !store::transition(db, node.id, from, to, actor, reason, None, json!({})).await? {
        return Err(OperatorError::Refused(format!(
            "node {name} is {}: maintenance {} does not apply now",
            node.state,
            if on { "on" } else { "off" }
        )));
    }
    Ok(to)
}

/// `node evacuation NAME allow|deny`: the per-node flag of the policy.
pub async fn set_evacuation_allowed(
    db: &aos_db::DatabaseConnection,
    name: &str,
    allowed: bool,
    actor: &str,
) -> Result<(), OperatorError> {
    let node = node_named(db, name).await?;
    let transaction = aos_db::begin_write(db).await.map_err(|e| OperatorError::Refused(e.to_string()))?;
    let mut update: node::ActiveModel = node.clone().into();
    update.evacuation_allowed = Set(allowed);
    update.updated_at = Set(aos_db::db_time(Utc::now()));
    update.update(&transaction).await?;
    let reason =
        if allowed { "automatic evacuation allowed (operator)" } else { "automatic evacuation denied (operator)" };
    store::record_event(
        &transaction,
        store::Event {
            node_id: node.id,
            kind: "policy_changed",
            from: None,
            to: None,
            actor,
            reason,
            task_id: None,
            details: json!({ "evacuation_allowed": allowed }),
        },
        Utc::now(),
    )
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// `node recover NAME`: after an incident, clear Nova's forced_down (Nova refuses while
/// the host's evacuations are not cleaned up, i.e. before its nova-compute ran again) and
/// let the tracker bring the node up after `mutex_up` observations. Also returns a parked
/// reserve host to service by hand (power it on and enable its nova-compute first).
pub async fn recover(
    db: &aos_db::DatabaseConnection,
    cloud: &dyn Cloud,
    name: &str,
    actor: &str,
) -> Result<(), OperatorError> {
    let node = node_named(db, name).await?;
    const FROM: &[NodeState] = &[
        NodeState::Evacuated,
        NodeState::EvacuationFailed,
        NodeState::FenceFailed,
        NodeState::Down,
        NodeState::Reserve,
    ];
    if !FROM.contains(&node.state) {
        return Err(OperatorError::Refused(format!("node {name} is {}: nothing to recover", node.state)));
    }
    let hosts = cloud.compute_hosts().await?;
    let service = hosts
        .iter()
        .find(|host| host.host == node.name)
        .ok_or_else(|| OperatorError::Refused(format!("Nova lists no nova-compute service for {name}")))?;
    if service.forced_down {
        cloud.set_forced_down(&service.service_id, false).await.map_err(|error| {
            OperatorError::Refused(format!(
                "Nova refused to clear forced_down on {name}: {error} (start its nova-compute first so it cleans up \
                 the evacuated servers, then try again)"
            ))
        })?;
    }
    if !store::transition(
        db,
        node.id,
        FROM,
        NodeState::Recovering,
        actor,
        "recovery by an operator: forced_down cleared",
        None,
        json!({}),
    )
    .await?
    {
        return Err(OperatorError::Refused(format!("node {name} changed state meanwhile; try again")));
    }
    store::clear_alarms(db, Some(node.id), &[], actor).await?;
    Ok(())
}
