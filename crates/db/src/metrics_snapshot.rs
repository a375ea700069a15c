//! The figures every daemon's `/metrics` reads from the shared database at scrape time: nodes
//! by state, tasks by kind and state, open alarms by kind, and who holds each lease. They are
//! the same whichever daemon is scraped (the database is the source of truth); a handful of
//! `GROUP BY` queries on indexed columns, cheap at a scrape every 15–60 s.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};

use crate::DbError;
use crate::entity::{NodeState, alarm, lease, node, task};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Every node state with its count (zero included, so a state that empties reads 0).
    pub nodes_by_state: Vec<(String, i64)>,
    /// Nodes an operator put into the reserve pool.
    pub pool_members: i64,
    /// (kind, state, count) of the tasks table.
    pub tasks: Vec<(String, String, i64)>,
    /// (kind, severity, count) of the alarms not cleared.
    pub open_alarms: Vec<(String, String, i64)>,
    /// (lease, holder, generation, expires at).
    pub leases: Vec<(String, String, i64, DateTime<Utc>)>,
}

pub async fn metrics_snapshot(db: &DatabaseConnection) -> Result<MetricsSnapshot, DbError> {
    use sea_orm::Iterable;
    let counted: Vec<(NodeState, i64)> = node::Entity::find()
        .select_only()
        .column(node::Column::State)
        .column_as(Expr::col(node::Column::Id).count(), "count")
        .filter(node::Column::RemovedFromNova.eq(false))
        .group_by(node::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    let nodes_by_state = NodeState::iter()
        .map(|state| {
            let count = counted.iter().find(|(s, _)| *s == state).map_or(0, |(_, count)| *count);
            (state.to_string(), count)
        })
        .collect();
    let pool_members = node::Entity::find()
        .filter(node::Column::PoolMember.eq(true))
        .filter(node::Column::RemovedFromNova.eq(false))
        .select_only()
        .column_as(Expr::col(node::Column::Id).count(), "count")
        .into_tuple::<i64>()
        .one(db)
        .await?
        .unwrap_or(0);
    let tasks: Vec<(String, task::TaskState, i64)> = task::Entity::find()
        .select_only()
        .column(task::Column::Kind)
        .column(task::Column::State)
        .column_as(Expr::col(task::Column::Id).count(), "count")
        .group_by(task::Column::Kind)
        .group_by(task::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    let open_alarms: Vec<(String, String, i64)> = alarm::Entity::find()
        .select_only()
        .column(alarm::Column::Kind)
        .column(alarm::Column::Severity)
        .column_as(Expr::col(alarm::Column::Id).count(), "count")
        .filter(alarm::Column::ClearedAt.is_null())
        .group_by(alarm::Column::Kind)
        .group_by(alarm::Column::Severity)
        .into_tuple()
        .all(db)
        .await?;
    let leases = lease::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.name, row.holder, row.generation, row.expires_at))
        .collect();
    Ok(MetricsSnapshot {
        nodes_by_state,
        pool_members,
        tasks: tasks.into_iter().map(|(kind, state, count)| (kind, state.to_string(), count)).collect(),
        open_alarms,
        leases,
    })
}
