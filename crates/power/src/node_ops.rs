//! Recorded power operations on nodes, and fencing for the HA core.
//!
//! Every operation is a `power_operations` row written *before* the device is touched
//! (result NULL = in flight), then finished with `succeeded`, `failed` or `timed_out` and the
//! error. The node tracker reads these rows to tell our own power-offs from failures; a
//! worker that dies mid-operation leaves the row unfinished, which says exactly that. State
//! changing operations on a node are also a `node_events` row (`power.<operation>`, or
//! `power.fence`), so the node's story shows them.

use std::time::Instant;

use aos_db::entity::{node, node_event, power_operation};
use aos_db::{DatabaseConnection, db_time};
use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use serde::Serialize;
use serde_json::json;

use crate::driver::{BootDevice, PowerSettings, PowerState, connect_driver};
use crate::error::{PowerError, PowerErrorKind};
use crate::keyring::Keyring;
use crate::operation::{PowerAction, perform};
use crate::store::{PowerBinding, StoreError, default_binding, device_spec};

/// What a finished, successful operation did and read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationReport {
    /// The `power_operations` row.
    pub operation_id: i64,
    pub node_id: Option<i64>,
    pub device: String,
    pub outlet: String,
    pub action: PowerAction,
    /// The power state read back at the end.
    pub state: PowerState,
    /// For `bootdev_pxe`: the boot device read back.
    pub boot_device: Option<BootDevice>,
    /// False when the host already was as asked (nothing was sent).
    pub command_sent: bool,
    pub elapsed_ms: u64,
}

/// The result of [`fence_node`]: the node is verified off. `command_sent` is false when it
/// already was.
pub type FenceReport = OperationReport;

/// Why an operation on a node did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NodeOperationError {
    #[error("no node with id {node_id}")]
    NodeNotFound { node_id: i64 },
    /// The node has no default power binding: it cannot be fenced (the HA core decides
    /// whether to evacuate anyway).
    #[error("node {node} has no power device (bind one with `aos-cloud-manager node init`)")]
    NoPowerDevice { node_id: i64, node: String },
    /// The device failed; the operation row `operation_id` records it.
    #[error("{error} (power operation {operation_id})")]
    Power { operation_id: i64, error: PowerError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NodeOperationError {
    /// The device error's kind, if the device was reached at all.
    pub fn power_error_kind(&self) -> Option<PowerErrorKind> {
        match self {
            NodeOperationError::Power { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

impl From<sea_orm::DbErr> for NodeOperationError {
    fn from(error: sea_orm::DbErr) -> Self {
        NodeOperationError::Store(StoreError::Database(error))
    }
}

/// The error type of [`fence_node`].
pub type FenceError = NodeOperationError;

/// Fences a node for the HA core: hard power off through its default binding and verify off
/// (polling to `[power] verify_timeout`), recorded as operation `off` and node event
/// `power.fence`. Idempotent: a node already off succeeds once off has been read.
pub async fn fence_node(
    db: &DatabaseConnection,
    keyring: &Keyring,
    node_id: i64,
    actor: &str,
    task_id: Option<&str>,
    settings: &PowerSettings,
) -> Result<FenceReport, FenceError> {
    run(db, keyring, node_id, PowerAction::Off, "power.fence", actor, task_id, settings).await
}

/// Runs `action` on a node through its default binding, recorded like [`fence_node`], and
/// returns the state read back.
pub async fn run_node_operation(
    db: &DatabaseConnection,
    keyring: &Keyring,
    node_id: i64,
    action: PowerAction,
    actor: &str,
    task_id: Option<&str>,
    settings: &PowerSettings,
) -> Result<OperationReport, NodeOperationError> {
    let event_kind = format!("power.{}", action.as_str());
    run(db, keyring, node_id, action, &event_kind, actor, task_id, settings).await
}

/// Runs `action` on a device (and outlet) directly, e.g. a host not yet known to Nova. The
/// row names the node bound to that device and outlet, if there is one.
#[allow(clippy::too_many_arguments)]
pub async fn run_device_operation(
    db: &DatabaseConnection,
    keyring: &Keyring,
    device_name: &str,
    outlet: &str,
    action: PowerAction,
    actor: &str,
    task_id: Option<&str>,
    settings: &PowerSettings,
) -> Result<OperationReport, NodeOperationError> {
    let device = crate::store::find_device(db, device_name)
        .await?
        .ok_or_else(|| StoreError::DeviceNotFound(device_name.to_owned()))?;
    let bound = crate::store::device_bindings(db, device.id).await?;
    let node_id = bound.iter().find(|binding| binding.outlet == outlet).map(|binding| binding.node_id);
    let binding = PowerBinding {
        id: 0,
        node_id: node_id.unwrap_or(0),
        node_name: String::new(),
        power_device_id: device.id,
        device_name: device.name,
        outlet: outlet.to_owned(),
        is_default: false,
    };
    let event_kind = format!("power.{}", action.as_str());
    execute(db, keyring, node_id, &binding, action, &event_kind, actor, task_id, settings).await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    db: &DatabaseConnection,
    keyring: &Keyring,
    node_id: i64,
    action: PowerAction,
    event_kind: &str,
    actor: &str,
    task_id: Option<&str>,
    settings: &PowerSettings,
) -> Result<OperationReport, NodeOperationError> {
    let node = node::Entity::find_by_id(node_id).one(db).await?.ok_or(NodeOperationError::NodeNotFound { node_id })?;
    let binding =
        default_binding(db, node_id).await?.ok_or(NodeOperationError::NoPowerDevice { node_id, node: node.name })?;
    execute(db, keyring, Some(node_id), &binding, action, event_kind, actor, task_id, settings).await
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    db: &DatabaseConnection,
    keyring: &Keyring,
    node_id: Option<i64>,
    binding: &PowerBinding,
    action: PowerAction,
    event_kind: &str,
    actor: &str,
    task_id: Option<&str>,
    settings: &PowerSettings,
) -> Result<OperationReport, NodeOperationError> {
    // The record comes first: if we die while the device is acting, the row says so.
    let record = power_operation::ActiveModel {
        node_id: Set(node_id),
        power_device_id: Set(binding.power_device_id),
        operation: Set(action.as_str().to_owned()),
        requested_at: Set(db_time(Utc::now())),
        finished_at: Set(None),
        result: Set(None),
        error: Set(None),
        actor: Set(actor.to_owned()),
        task_id: Set(task_id.map(str::to_owned)),
        ..Default::default()
    }
    .insert(db)
    .await?;
    let started = Instant::now();
    let span = tracing::info_span!("power_operation", operation_id = record.id, node_id, device = %binding.device_name,
        outlet = %binding.outlet, action = %action, task_id);

    let outcome = async {
        let spec = device_spec(db, keyring, binding.power_device_id).await.map_err(|error| match error {
            // A key problem is this operation's failure, recorded on its row.
            StoreError::Key(key) => {
                PowerError::Protocol { device: binding.device_name.clone(), detail: key.to_string() }
            }
            other => PowerError::Protocol { device: binding.device_name.clone(), detail: other.to_string() },
        })?;
        let driver = connect_driver(&spec, &binding.outlet, settings)?;
        perform(driver.as_ref(), action, settings).await
    }
    .await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    let (result, error_text) = match &outcome {
        Ok(_) => ("succeeded", None),
        Err(error) if error.kind() == PowerErrorKind::TimedOut => {
            ("timed_out", Some(format!("{}: {error}", error.kind())))
        }
        Err(error) => ("failed", Some(format!("{}: {error}", error.kind()))),
    };
    let mut finish: power_operation::ActiveModel = record.clone().into();
    finish.finished_at = Set(Some(db_time(Utc::now())));
    finish.result = Set(Some(result.to_owned()));
    finish.error = Set(error_text.clone());
    finish.update(db).await?;

    if let (Some(node_id), true) = (node_id, action.changes_state()) {
        let reason = match &outcome {
            Ok(done) if !done.command_sent => {
                format!("{action} through {}: already {}, nothing sent", binding.device_name, done.state)
            }
            Ok(done) => format!("{action} through {}: verified {}", binding.device_name, done.state),
            Err(error) => format!("{action} through {} {result}: {error}", binding.device_name),
        };
        node_event::ActiveModel {
            node_id: Set(node_id),
            occurred_at: Set(db_time(Utc::now())),
            kind: Set(event_kind.to_owned()),
            from_state: Set(None),
            to_state: Set(None),
            actor: Set(actor.to_owned()),
            reason: Set(reason),
            task_id: Set(task_id.map(str::to_owned)),
            details: Set(Some(json!({
                "operation_id": record.id,
                "device": binding.device_name,
                "outlet": binding.outlet,
                "result": result,
                "elapsed_ms": elapsed_ms,
            }))),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }

    match outcome {
        Ok(done) => {
            span.in_scope(|| {
                tracing::info!(state = %done.state, command_sent = done.command_sent, elapsed_ms, "power operation succeeded")
            });
            Ok(OperationReport {
                operation_id: record.id,
                node_id,
                device: binding.device_name.clone(),
                outlet: binding.outlet.clone(),
                action,
                state: done.state,
                boot_device: done.boot_device,
                command_sent: done.command_sent,
                elapsed_ms,
            })
        }
        Err(error) => {
            span.in_scope(|| tracing::warn!(result, error = %error, elapsed_ms, "power operation failed"));
            Err(NodeOperationError::Power { operation_id: record.id, error })
        }
    }
}

/// The latest operations on a node, newest first (for `node show` and the tracker).
pub async fn recent_operations(
    db: &DatabaseConnection,
    node_id: i64,
    limit: u64,
) -> Result<Vec<power_operation::Model>, StoreError> {
    use sea_orm::{QueryOrder, QuerySelect};
    Ok(power_operation::Entity::find()
        .filter(power_operation::Column::NodeId.eq(node_id))
        .order_by_desc(power_operation::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}
