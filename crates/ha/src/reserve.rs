//! Reserve (standby) hosts: powered-off hypervisors bound to main hosts, brought up by the
//! recovery of a main host when the others cannot hold its servers (`[node_tracker]
//! timeout_reserv_node_up`). `reserve add|remove|list` manage the bindings.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::json;

use aos_db::entity::{NodeState, node, reserve_binding};

use crate::operator::{OperatorError, node_named};
use crate::store;

/// The reserve hosts bound to `main_node_id` that are on standby now, highest priority first.
pub async fn reserves_of(
    db: &aos_db::DatabaseConnection,
    main_node_id: i64,
) -> Result<Vec<node::Model>, sea_orm::DbErr> {
    let bindings = reserve_binding::Entity::find()
        .filter(reserve_binding::Column::MainNodeId.eq(main_node_id))
        .order_by_desc(reserve_binding::Column::Priority)
        .order_by_asc(reserve_binding::Column::Id)
        .all(db)
        .await?;
    let mut reserves = Vec::new();
    for binding in bindings {
        if let Some(reserve) = node::Entity::find_by_id(binding.reserve_node_id).one(db).await?
            && reserve.state == NodeState::Reserve
        {
            reserves.push(reserve);
        }
    }
    Ok(reserves)
}

/// `reserve add RESERVE --for MAIN [--priority P]`: `RESERVE` becomes a standby host (state
/// `reserve`; the tracker leaves it alone) that the recovery of `MAIN` may bring up. The host
/// itself should be powered off and disabled in Nova (`power off`, `openstack compute service
/// set --disable`): this records the decision, it does not act on the host.
pub async fn add(
    db: &aos_db::DatabaseConnection,
    reserve_name: &str,
    main_name: &str,
    priority: i32,
    actor: &str,
) -> Result<(), OperatorError> {
    if reserve_name == main_name {
        return Err(OperatorError::Refused("a host cannot be its own reserve".into()));
    }
    let reserve = node_named(db, reserve_name).await?;
    let main = node_named(db, main_name).await?;
    if main.is_reserve {
        return Err(OperatorError::Refused(format!("{main_name} is itself a reserve host")));
    }
    let existing = reserve_binding::Entity::find()
        .filter(reserve_binding::Column::ReserveNodeId.eq(reserve.id))
        .filter(reserve_binding::Column::MainNodeId.eq(main.id))
        .one(db)
        .await?;
    if existing.is_some() {
        return Err(OperatorError::Refused(format!("{reserve_name} already backs {main_name}")));
    }
    let transaction = aos_db::begin_write(db).await.map_err(|e| OperatorError::Refused(e.to_string()))?;
    if reserve.state != NodeState::Reserve {
        const FROM: &[NodeState] =
            &[NodeState::Up, NodeState::Maintenance, NodeState::Disabled, NodeState::Down, NodeState::Recovering];
        if !store::transition(
            &transaction,
            reserve.id,
            FROM,
            NodeState::Reserve,
            actor,
            &format!("made a reserve host for {main_name}"),
            None,
            json!({}),
        )
        .await?
        {
            return Err(OperatorError::Refused(format!(
                "{reserve_name} is {}: it cannot become a reserve host now",
                reserve.state
            )));
        }
    }
    let mut update: node::ActiveModel = node::Entity::find_by_id(reserve.id)
        .one(&transaction)
        .await?
        .map(Into::into)
        .ok_or_else(|| OperatorError::UnknownNode(reserve_name.to_owned()))?;
    update.is_reserve = Set(true);
    update.updated_at = Set(aos_db::db_time(Utc::now()));
    update.update(&transaction).await?;
    reserve_binding::ActiveModel {
        reserve_node_id: Set(reserve.id),
        main_node_id: Set(main.id),
        priority: Set(priority),
        ..Default::default()
    }
    .insert(&transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// `reserve remove RESERVE --for MAIN`.
pub async fn remove(db: &aos_db::DatabaseConnection, reserve_name: &str, main_name: &str) -> Result<(), OperatorError> {
    let reserve = node_named(db, reserve_name).await?;
    let main = node_named(db, main_name).await?;
    let deleted = reserve_binding::Entity::delete_many()
        .filter(reserve_binding::Column::ReserveNodeId.eq(reserve.id))
        .filter(reserve_binding::Column::MainNodeId.eq(main.id))
        .exec(db)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(OperatorError::Refused(format!("{reserve_name} does not back {main_name}")));
    }
    Ok(())
}

/// Every binding as (reserve, main, priority, reserve state).
pub async fn list(db: &aos_db::DatabaseConnection) -> Result<Vec<(String, String, i32, NodeState)>, sea_orm::DbErr> {
    let nodes: std::collections::BTreeMap<i64, node::Model> =
        node::Entity::find().all(db).await?.into_iter().map(|n| (n.id, n)).collect();
    Ok(reserve_binding::Entity::find()
        .order_by_asc(reserve_binding::Column::MainNodeId)
        .order_by_desc(reserve_binding::Column::Priority)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|binding| {
            let reserve = nodes.get(&binding.reserve_node_id)?;
            let main = nodes.get(&binding.main_node_id)?;
            Some((reserve.name.clone(), main.name.clone(), binding.priority, reserve.state))
        })
        .collect())
}
