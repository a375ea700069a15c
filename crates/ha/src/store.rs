//! The HA core's writes: node transitions (conditional, so two actors never both move a node),
//! node events (the incident timeline) and alarms.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::Value;

use aos_db::entity::{NodeState, alarm, node, node_event};

/// One line of a node's timeline.
pub struct Event<'a> {
    pub node_id: i64,
    pub kind: &'a str,
    pub from: Option<NodeState>,
    pub to: Option<NodeState>,
    pub actor: &'a str,
    pub reason: &'a str,
    pub task_id: Option<&'a str>,
    pub details: Value,
}

pub async fn record_event<C: ConnectionTrait>(
    conn: &C,
    event: Event<'_>,
    at: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    node_event::ActiveModel {
        node_id: Set(event.node_id),
        occurred_at: Set(aos_db::db_time(at)),
        kind: Set(event.kind.to_owned()),
        from_state: Set(event.from.map(|state| state.to_string())),
        to_state: Set(event.to.map(|state| state.to_string())),
        actor: Set(event.actor.to_owned()),
        reason: Set(event.reason.to_owned()),
        task_id: Set(event.task_id.map(str::to_owned)),
        details: Set(if event.details.is_null() { None } else { Some(event.details) }),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Moves `node_id` to `to` only if it is in one of `from` now; records the transition as a
/// `state_changed` event. Returns false (and writes nothing) when the node was elsewhere:
/// someone else decided first.
#[allow(clippy::too_many_arguments)]
pub async fn transition<C: ConnectionTrait>(
    conn: &C,
    node_id: i64,
    from: &[NodeState],
    to: NodeState,
    actor: &str,
    reason: &str,
    task_id: Option<&str>,
    details: Value,
) -> Result<bool, sea_orm::DbErr> {
    let now = aos_db::db_time(Utc::now());
    let Some(current) = node::Entity::find_by_id(node_id).one(conn).await? else {
        return Ok(false);
    };
    if !from.contains(&current.state) {
        return Ok(false);
    }
    let updated = node::Entity::update_many()
        .col_expr(node::Column::State, Expr::value(to))
        .col_expr(node::Column::StateChangedAt, Expr::value(now))
        .col_expr(node::Column::UpdatedAt, Expr::value(now))
        .filter(node::Column::Id.eq(node_id))
        .filter(node::Column::State.eq(current.state))
        .exec(conn)
        .await?;
    if updated.rows_affected == 0 {
        return Ok(false);
    }
    let event = Event {
        node_id,
        kind: "state_changed",
        from: Some(current.state),
        to: Some(to),
        actor,
        reason,
        task_id,
        details,
    };
    record_event(conn, event, now).await?;
    Ok(true)
}

/// Raises an alarm unless one of the same kind is open for the same node since `since`.
/// Returns whether a new alarm was raised.
#[allow(clippy::too_many_arguments)]
pub async fn raise_alarm<C: ConnectionTrait>(
    conn: &C,
    kind: &str,
    severity: &str,
    node_id: Option<i64>,
    message: &str,
    details: Value,
    since: DateTime<Utc>,
) -> Result<bool, sea_orm::DbErr> {
    let mut open = alarm::Entity::find()
        .filter(alarm::Column::Kind.eq(kind))
        .filter(alarm::Column::ClearedAt.is_null())
        .filter(alarm::Column::RaisedAt.gte(aos_db::db_time(since)));
    open = match node_id {
        Some(id) => open.filter(alarm::Column::NodeId.eq(id)),
        None => open.filter(alarm::Column::NodeId.is_null()),
    };
    if open.one(conn).await?.is_some() {
        return Ok(false);
    }
    alarm::ActiveModel {
        kind: Set(kind.to_owned()),
        severity: Set(severity.to_owned()),
        node_id: Set(node_id),
        message: Set(message.to_owned()),
        details: Set(if details.is_null() { None } else { Some(details) }),
        raised_at: Set(aos_db::db_time(Utc::now())),
        cleared_at: Set(None),
        cleared_by: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    tracing::warn!(kind, node_id, message, "alarm raised");
    Ok(true)
}

/// Clears the open alarms of a node (all kinds when `kinds` is empty).
pub async fn clear_alarms<C: ConnectionTrait>(
    conn: &C,
    node_id: Option<i64>,
    kinds: &[&str],
    cleared_by: &str,
) -> Result<u64, sea_orm::DbErr> {
    let mut update = alarm::Entity::update_many()
        .col_expr(alarm::Column::ClearedAt, Expr::value(aos_db::db_time(Utc::now())))
        .col_expr(alarm::Column::ClearedBy, Expr::value(cleared_by.to_owned()))
        .filter(alarm::Column::ClearedAt.is_null());
    update = match node_id {
        Some(id) => update.filter(alarm::Column::NodeId.eq(id)),
        None => update.filter(alarm::Column::NodeId.is_null()),
    };
    if !kinds.is_empty() {
        update = update.filter(alarm::Column::Kind.is_in(kinds.iter().copied()));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// Open alarms, newest first.
pub async fn open_alarms<C: ConnectionTrait>(conn: &C) -> Result<Vec<alarm::Model>, sea_orm::DbErr> {
    alarm::Entity::find()
        .filter(alarm::Column::ClearedAt.is_null())
        .order_by_desc(alarm::Column::RaisedAt)
        .all(conn)
        .await
}

/// Tasks, newest first, optionally of one node (`task list`).
pub async fn list_tasks<C: ConnectionTrait>(
    conn: &C,
    limit: u64,
    node_id: Option<i64>,
) -> Result<Vec<aos_db::entity::task::Model>, sea_orm::DbErr> {
    use aos_db::entity::task;
    use sea_orm::QuerySelect;
    let mut query = task::Entity::find().order_by_desc(task::Column::CreatedAt);
    if let Some(id) = node_id {
        query = query.filter(task::Column::NodeId.eq(id));
    }
    query.limit(limit).all(conn).await
}

/// One task and its steps in execution order (`task show`).
pub async fn task_with_steps<C: ConnectionTrait>(
    conn: &C,
    task_id: &str,
) -> Result<Option<(aos_db::entity::task::Model, Vec<aos_db::entity::task_step::Model>)>, sea_orm::DbErr> {
    use aos_db::entity::{task, task_step};
    let Some(task) = task::Entity::find_by_id(task_id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    let steps = task_step::Entity::find()
        .filter(task_step::Column::TaskId.eq(task.id.clone()))
        .order_by_asc(task_step::Column::Seq)
        .all(conn)
        .await?;
    Ok(Some((task, steps)))
}

/// Alarms, newest first; only open ones unless `all` (`alarm list`).
pub async fn list_alarms<C: ConnectionTrait>(
    conn: &C,
    all: bool,
    limit: u64,
) -> Result<Vec<alarm::Model>, sea_orm::DbErr> {
    use sea_orm::QuerySelect;
    let mut query = alarm::Entity::find().order_by_desc(alarm::Column::RaisedAt).order_by_desc(alarm::Column::Id);
    if !all {
        query = query.filter(alarm::Column::ClearedAt.is_null());
    }
    query.limit(limit).all(conn).await
}
