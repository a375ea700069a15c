//! The database layer of aos-cloud-manager, and the only crate that knows sea-orm.
//!
//! It owns: opening the pool on MySQL/MariaDB or SQLite ([`connect`]), the entities
//! ([`entity`], one module per table), migration control for the CLI and the daemons'
//! start-up check ([`migration_status`], [`migrate_to`], [`schema_status`]), the leases that
//! elect singleton roles and fence their writes ([`lease_acquire_or_renew`],
//! [`guard_lease`]), the registry of running daemons ([`register_service_instance`]), and
//! the recording of Nova's notifications with its mirror into `nodes`
//! ([`record_notifications`]).
//! The schema itself lives in the `aos-migrations` crate.
//!
//! Both backends behave the same by construction: every function here is tested by one
//! conformance suite run against a fresh MariaDB database and a fresh SQLite file
//! (see [`db_test_suite!`] and the `testing` feature).

mod agent_heartbeat_store;
mod balance_store;
mod connect;
mod drs_store;
pub mod entity;
mod error;
mod lease;
mod metrics_snapshot;
mod migration;
mod node_store;
mod notification_store;
mod service_registry;
mod time;
mod transaction;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use agent_heartbeat_store::{
    ReceivedHeartbeat, agent_liveness, find_agent_heartbeat, forget_agent, record_agent_heartbeats,
};
pub use balance_store::active_tasks_of_kinds;
pub use connect::{SQLITE_BUSY_TIMEOUT, connect, mask_url};
pub use drs_store::{
    NewDrsAction, NewDrsAudit, NewDrsPlan, PlanTransition, drs_cancel_plan, drs_find_audit, drs_find_plan,
    drs_finish_audit, drs_finish_plan, drs_list_audits, drs_mark_applying, drs_set_action_state, drs_start_audit,
};
pub use error::DbError;
pub use lease::{LeaseState, guard_lease, lease_acquire_or_renew, lease_current, lease_release};
pub use metrics_snapshot::{MetricsSnapshot, metrics_snapshot};
pub use migration::{
    MigrateOutcome, MigrationInfo, SchemaStatus, current_version, latest_version, migrate_to, migration_status,
    schema_status,
};
pub use node_store::{
    NodeSyncReport, ObservedComputeHost, find_node, list_nodes, list_notifications, node_history, sync_nodes,
};
pub use notification_store::{
    ComputeServiceUpdate, IncomingNotification, RecordOutcome, SERVICE_UPDATE_EVENT, count_notifications,
    find_notification, limits as notification_limits, record_notifications,
};
pub use service_registry::{
    deregister_service_instance, heartbeat_service_instance, list_service_instances, purge_stale_service_instances,
    register_service_instance,
};
pub use time::db_time;
pub use transaction::begin_write;

/// The handle types callers pass around; re-exported so that other crates do not need a
/// sea-orm dependency of their own to hold a pool or a transaction.
pub use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait};
