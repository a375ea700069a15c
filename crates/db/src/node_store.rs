//! Reading nodes and their history, and mirroring Nova's view of compute hosts into `nodes`
//! (node sync). The HA state machine's own transitions are not made here: sync only records
//! what Nova says (service id, enabled/disabled, up/down, forced down) and which hosts Nova no
//! longer lists, each change as a `node_events` row so the incident timeline shows it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;

use crate::entity::node::{self, NodeState};
use crate::entity::{node_event, notification};
use crate::{DbError, begin_write, db_time, guard_lease};

/// Every node, by name.
pub async fn list_nodes(db: &DatabaseConnection) -> Result<Vec<node::Model>, DbError> {
    Ok(node::Entity::find().order_by_asc(node::Column::Name).all(db).await?)
}

/// The node named `name` (Nova's hypervisor host name).
pub async fn find_node(db: &DatabaseConnection, name: &str) -> Result<Option<node::Model>, DbError> {
    Ok(node::Entity::find().filter(node::Column::Name.eq(name)).one(db).await?)
}

/// The newest `limit` events of a node, newest first.
pub async fn node_history(
    db: &DatabaseConnection,
    node_id: i64,
    limit: u64,
) -> Result<Vec<node_event::Model>, DbError> {
    Ok(node_event::Entity::find()
        .filter(node_event::Column::NodeId.eq(node_id))
        .order_by_desc(node_event::Column::OccurredAt)
        .order_by_desc(node_event::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// The newest `limit` received notifications, newest first, optionally of one host.
pub async fn list_notifications(
    db: &DatabaseConnection,
    host: Option<&str>,
    limit: u64,
) -> Result<Vec<notification::Model>, DbError> {
    let mut query = notification::Entity::find();
    if let Some(host) = host {
        query = query.filter(notification::Column::Host.eq(host));
    }
    Ok(query.order_by_desc(notification::Column::Id).limit(limit).all(db).await?)
}

/// Nova's view of one compute host, as node sync observes it (services + hypervisors lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedComputeHost {
    pub host: String,
    pub service_id: Option<String>,
    /// `enabled` / `disabled`.
    pub status: String,
    /// `up` / `down`.
    pub state: String,
    pub forced_down: bool,
    pub hypervisor_id: Option<String>,
}

impl ObservedComputeHost {
    /// A host Nova reports up and enabled, not forced down (fixtures, tools).
    pub fn up_and_enabled(host: impl Into<String>, service_id: Option<String>) -> Self {
        ObservedComputeHost {
            host: host.into(),
            service_id,
            status: "enabled".into(),
            state: "up".into(),
            forced_down: false,
            hypervisor_id: None,
        }
    }
}

/// What one sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSyncReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    pub returned: Vec<String>,
    pub unchanged: usize,
}

/// Mirrors `observed` into `nodes` in one write transaction guarded by the caller's lease
/// (`lease` = name and generation; `None` for an operator's one-off `node sync`, which is safe
/// because sync only mirrors Nova). New hosts are added in state `up`; hosts missing from
/// Nova are marked `removed_from_nova` and keep their rows and history; every change is a
/// `node_events` row with actor `actor`.
pub async fn sync_nodes(
    db: &DatabaseConnection,
    lease: Option<(&str, i64)>,
    actor: &str,
    observed: &[ObservedComputeHost],
) -> Result<NodeSyncReport, DbError> {
    let now = db_time(Utc::now());
    let transaction = begin_write(db).await?;
    if let Some((name, generation)) = lease {
        guard_lease(&transaction, name, generation).await?;
    }
    let existing: BTreeMap<String, node::Model> =
        node::Entity::find().all(&transaction).await?.into_iter().map(|node| (node.name.clone(), node)).collect();
    let mut report = NodeSyncReport::default();
    let mut seen = BTreeSet::new();
    for host in observed {
        seen.insert(host.host.clone());
        let nova = json!({
            "service_id": host.service_id, "status": host.status, "state": host.state,
            "forced_down": host.forced_down, "hypervisor_id": host.hypervisor_id,
        });
        match existing.get(&host.host) {
            None => {
                let mut created = new_node(&host.host, now);
                created.nova_service_id = Set(host.service_id.clone());
                created.nova_status = Set(Some(host.status.clone()));
                created.nova_state = Set(Some(host.state.clone()));
                created.nova_forced_down = Set(host.forced_down);
                created.hypervisor_id = Set(host.hypervisor_id.clone());
                let created = created.insert(&transaction).await?;
                record(&transaction, created.id, now, "nova.sync.added", actor, "new compute host in Nova", nova)
                    .await?;
                report.added.push(host.host.clone());
            }
            Some(node) => {
                let changed = node.nova_service_id != host.service_id
                    || node.nova_status.as_deref() != Some(host.status.as_str())
                    || node.nova_state.as_deref() != Some(host.state.as_str())
                    || node.nova_forced_down != host.forced_down
                    || node.hypervisor_id != host.hypervisor_id;
                if !changed && !node.removed_from_nova {
                    report.unchanged += 1;
                    continue;
                }
                let mut update: node::ActiveModel = node.clone().into();
                update.nova_service_id = Set(host.service_id.clone());
                update.nova_status = Set(Some(host.status.clone()));
                update.nova_state = Set(Some(host.state.clone()));
                update.nova_forced_down = Set(host.forced_down);
                update.hypervisor_id = Set(host.hypervisor_id.clone());
                update.removed_from_nova = Set(false);
                update.updated_at = Set(now);
                update.update(&transaction).await?;
                if node.removed_from_nova {
                    record(&transaction, node.id, now, "nova.sync.returned", actor, "listed by Nova again", nova)
                        .await?;
                    report.returned.push(host.host.clone());
                } else {
                    record(&transaction, node.id, now, "nova.sync.changed", actor, "Nova's view changed", nova).await?;
                    report.updated.push(host.host.clone());
                }
            }
        }
    }
    for (name, node) in &existing {
        if seen.contains(name) || node.removed_from_nova {
            continue;
        }
        let mut update: node::ActiveModel = node.clone().into();
        update.removed_from_nova = Set(true);
        update.updated_at = Set(now);
        update.update(&transaction).await?;
        record(&transaction, node.id, now, "nova.sync.removed", actor, "no longer listed by Nova", json!({})).await?;
        report.removed.push(name.clone());
    }
    transaction.commit().await?;
    Ok(report)
}

/// A node first seen now, before Nova's fields are filled in: state `up`, evacuation allowed,
/// not a reserve, no observations yet. Both node sync and the listener add hosts this way.
pub(crate) fn new_node(name: &str, now: chrono::DateTime<Utc>) -> node::ActiveModel {
    node::ActiveModel {
        name: Set(name.to_owned()),
        state: Set(NodeState::Up),
        state_changed_at: Set(now),
        nova_service_id: Set(None),
        nova_status: Set(None),
        nova_state: Set(None),
        nova_forced_down: Set(false),
        hypervisor_id: Set(None),
        evacuation_allowed: Set(true),
        is_reserve: Set(false),
        down_observations: Set(0),
        up_observations: Set(0),
        removed_from_nova: Set(false),
        pool_member: Set(false),
        idle_since: Set(None),
        boot_mac: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

async fn record(
    transaction: &sea_orm::DatabaseTransaction,
    node_id: i64,
    now: chrono::DateTime<Utc>,
    kind: &str,
    actor: &str,
    reason: &str,
    details: serde_json::Value,
) -> Result<(), DbError> {
    node_event::ActiveModel {
        node_id: Set(node_id),
        occurred_at: Set(now),
        kind: Set(kind.to_owned()),
        from_state: Set(None),
        to_state: Set(None),
        actor: Set(actor.to_owned()),
        reason: Set(reason.to_owned()),
        task_id: Set(None),
        details: Set(Some(details)),
        ..Default::default()
    }
    .insert(transaction)
    .await?;
    Ok(())
}
