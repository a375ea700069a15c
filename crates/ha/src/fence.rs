//! The fencing hook: what the recovery task asks of the power layer before it evacuates.
//!
//! "Fenced" means powered off and verified off (the power state read back from the device,
//! polled to a deadline), so the node can no longer run its servers or write to their disks.
//! The power layer (aos-power: IPMI, Redfish, SSH drivers) implements [`Fencer`] for the
//! daemons; the simulated cloud implements it for the demo and the benchmarks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};

use aos_db::entity::power_operation;

/// The node to fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceTarget {
    pub node_id: i64,
    pub node: String,
}

/// A successful fence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReport {
    /// The device that powered the node off (name), for the timeline.
    pub device: String,
    /// The node was already off when we looked.
    pub was_already_off: bool,
    /// How long power-off plus verification took.
    pub took_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The node has no power device: it cannot be fenced (the task decides what that means).
    #[error("node {0} has no power device")]
    NoPowerDevice(String),
    /// The device did not confirm power off (unreachable, refused, timed out...).
    #[error("fencing {node} failed: {reason}")]
    Failed { node: String, reason: String },
}

#[async_trait]
pub trait Fencer: Send + Sync + 'static {
    async fn has_power_device(&self, target: &FenceTarget) -> Result<bool, String>;
    /// Powers the node off and verifies it off. Idempotent: a node already off is verified
    /// and reported as such.
    async fn fence(&self, target: &FenceTarget, actor: &str, task_id: Option<&str>) -> Result<FenceReport, FenceError>;
    /// Powers the node on (a fenced host restarted, a reserve host brought up) and verifies it
    /// on. Idempotent.
    async fn power_on(
        &self,
        target: &FenceTarget,
        actor: &str,
        task_id: Option<&str>,
    ) -> Result<FenceReport, FenceError>;
    /// Asks the node to power itself off (ACPI soft off) without waiting. Drivers without a
    /// soft off power it off hard, as [`Fencer::fence`] does.
    async fn soft_power_off(&self, target: &FenceTarget, actor: &str, task_id: Option<&str>) -> Result<(), FenceError> {
        self.fence(target, actor, task_id).await.map(|_| ())
    }
    /// Before powering a reserve host on: make its next boot a network (PXE) boot from
    /// `boot_mac` — its PXELINUX file in `[pxe] conf_dir` and the device's boot override.
    async fn prepare_network_boot(
        &self,
        target: &FenceTarget,
        boot_mac: &str,
        actor: &str,
        task_id: Option<&str>,
    ) -> Result<(), FenceError>;
    /// Once the host runs: remove its PXELINUX file so its next boot takes the directory's
    /// `default` (the local disk).
    async fn finish_network_boot(&self, target: &FenceTarget, boot_mac: &str) -> Result<(), FenceError>;
}

/// For deployments (and tests) with no power management at all: no node has a device.
pub struct NoPowerDevices;

#[async_trait]
impl Fencer for NoPowerDevices {
    async fn has_power_device(&self, _target: &FenceTarget) -> Result<bool, String> {
        Ok(false)
    }

    async fn fence(
        &self,
        target: &FenceTarget,
        _actor: &str,
        _task_id: Option<&str>,
    ) -> Result<FenceReport, FenceError> {
        Err(FenceError::NoPowerDevice(target.node.clone()))
    }

    async fn power_on(
        &self,
        target: &FenceTarget,
        _actor: &str,
        _task_id: Option<&str>,
    ) -> Result<FenceReport, FenceError> {
        Err(FenceError::NoPowerDevice(target.node.clone()))
    }

    async fn prepare_network_boot(
        &self,
        target: &FenceTarget,
        _boot_mac: &str,
        _actor: &str,
        _task_id: Option<&str>,
    ) -> Result<(), FenceError> {
        Err(FenceError::NoPowerDevice(target.node.clone()))
    }

    async fn finish_network_boot(&self, _target: &FenceTarget, _boot_mac: &str) -> Result<(), FenceError> {
        Ok(())
    }
}

/// Operations of ours that take a node's power away (and so explain its nova-compute going
/// down without any failure).
pub const POWER_LOSS_OPERATIONS: &[&str] = &["off", "soft_off", "reset", "cycle"];

/// The latest power operation of ours on `node_id` that explains a down transition noticed at
/// `down_since`: requested within `window` before it (or after it), and not failed.
pub async fn explaining_power_operation(
    db: &aos_db::DatabaseConnection,
    node_id: i64,
    down_since: DateTime<Utc>,
    window: chrono::Duration,
) -> Result<Option<power_operation::Model>, sea_orm::DbErr> {
    let operations = power_operation::Entity::find()
        .filter(power_operation::Column::NodeId.eq(node_id))
        .filter(power_operation::Column::Operation.is_in(POWER_LOSS_OPERATIONS.iter().copied()))
        .filter(power_operation::Column::RequestedAt.gte(aos_db::db_time(down_since - window)))
        .order_by_desc(power_operation::Column::RequestedAt)
        .all(db)
        .await?;
    Ok(operations.into_iter().find(|operation| operation.result.as_deref() != Some("failed")))
}
