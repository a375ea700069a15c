//! The registry of running daemon processes (`service_instances`): each daemon registers
//! at start, heartbeats while it runs, and deregisters on orderly shutdown. A row whose
//! heartbeat is old belongs to a process that died; the readiness report and the CLI show
//! it, and [`purge_stale_service_instances`] removes it.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder,
};

use crate::entity::service_instance::{self, Column, ServiceInstanceState};
use crate::{DbError, db_time};

/// Registers this process (state `starting`) and returns its row id for later heartbeats.
///
/// A leftover row with the same role, host and pid can only be from a process that died
/// without deregistering (the pid is ours now), so it is replaced rather than rejected.
///
/// The delete and the insert are two statements, each committed on its own, not one
/// transaction: no other process can write a row with our pid in between, and on
/// MariaDB/InnoDB a transaction whose delete found nothing keeps a gap lock until it
/// commits, so processes registering at the same moment (all-in-one starts five roles at
/// once) deadlocked on each other's gap locks when they inserted.
pub async fn register_service_instance(
    db: &DatabaseConnection,
    role: &str,
    host: &str,
    pid: u32,
) -> Result<i64, DbError> {
    let now = db_time(Utc::now());
    let pid = i64::from(pid);
    service_instance::Entity::delete_many()
        .filter(Column::Role.eq(role))
        .filter(Column::Host.eq(host))
        .filter(Column::Pid.eq(pid))
        .exec(db)
        .await?;
    let row = service_instance::ActiveModel {
        role: Set(role.to_owned()),
        host: Set(host.to_owned()),
        pid: Set(pid),
        started_at: Set(now),
        heartbeat_at: Set(now),
        state: Set(ServiceInstanceState::Starting),
        details: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

/// Records a heartbeat and the current lifecycle state. Returns false when the row is gone
/// (purged as stale after a long stall): the caller should register again.
pub async fn heartbeat_service_instance(
    db: &DatabaseConnection,
    id: i64,
    state: ServiceInstanceState,
) -> Result<bool, DbError> {
    let now = db_time(Utc::now());
    let updated = service_instance::Entity::update_many()
        .col_expr(Column::HeartbeatAt, Expr::value(now))
        .col_expr(Column::State, Expr::value(state))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?
        .rows_affected;
    Ok(updated == 1)
}

/// Removes this process's row on orderly shutdown (a missing row is fine).
pub async fn deregister_service_instance(db: &DatabaseConnection, id: i64) -> Result<(), DbError> {
    service_instance::Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

/// Every registered process, by role, host and pid.
pub async fn list_service_instances(db: &DatabaseConnection) -> Result<Vec<service_instance::Model>, DbError> {
    Ok(service_instance::Entity::find()
        .order_by_asc(Column::Role)
        .order_by_asc(Column::Host)
        .order_by_asc(Column::Pid)
        .all(db)
        .await?)
}

/// Deletes rows whose last heartbeat is before `older_than`; returns how many. Generic over
/// the connection so the beat can run it inside a lease-guarded transaction.
pub async fn purge_stale_service_instances<C: ConnectionTrait>(
    db: &C,
    older_than: DateTime<Utc>,
) -> Result<u64, DbError> {
    Ok(service_instance::Entity::delete_many()
        .filter(Column::HeartbeatAt.lt(db_time(older_than)))
        .exec(db)
        .await?
        .rows_affected)
}
