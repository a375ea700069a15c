//! The queries balancing and DRS make on the jobs layer's `tasks` (docs/adr/0014-balancing.md,
//! docs/adr/0015-drs.md): which tasks of some kinds are still pending or running, so that the
//! beat does not start a balancing of an aggregate while another one runs, nor while HA
//! recovers a node.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::DbError;
use crate::entity::{TaskState, task};

/// The pending or running tasks whose kind is one of `kinds`, oldest first.
pub async fn active_tasks_of_kinds<C: ConnectionTrait>(conn: &C, kinds: &[&str]) -> Result<Vec<task::Model>, DbError> {
    Ok(task::Entity::find()
        .filter(task::Column::Kind.is_in(kinds.iter().copied()))
        .filter(task::Column::State.is_in([TaskState::Pending, TaskState::Running]))
        .order_by_asc(task::Column::CreatedAt)
        .all(conn)
        .await?)
}
