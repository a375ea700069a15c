//! The conformance suite of this crate: every test runs on a fresh MariaDB database and a
//! fresh SQLite file (see `crate::testing`).

mod drs;
mod entities;
mod leases;
mod migrations;
mod node_sync;
mod notifications;
mod service_registry;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

/// The tables the latest schema has, with the version that creates each.
pub(crate) const TABLES: &[(u32, &str)] = &[
    (1, "nodes"),
    (1, "node_events"),
    (2, "power_devices"),
    (2, "node_power_bindings"),
    (2, "power_operations"),
    (3, "availability_storages"),
    (3, "node_storage_bindings"),
    (3, "reserve_bindings"),
    (4, "tasks"),
    (4, "task_steps"),
    (5, "notifications"),
    (5, "alarms"),
    (5, "audit_log"),
    (6, "leases"),
    (6, "service_instances"),
    (9, "drs_audits"),
    (9, "drs_action_plans"),
    (9, "drs_actions"),
];

/// Whether `SELECT COUNT(*) FROM table` works, i.e. the table exists and is readable.
pub(crate) async fn table_is_queryable(db: &DatabaseConnection, table: &str) -> bool {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), format!("SELECT COUNT(*) FROM {table}")))
        .await
        .is_ok()
}
