//! Reserve (standby) hosts: powered-off hypervisors bound to main hosts, brought up by the
//! recovery of a main host when the others cannot hold its servers (`[node_tracker]
//! timeout_reserv_node_up`). `reserve add|remove|list` manage the bindings.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::{Value, json};

use aos_db::entity::{NodeState, node, reserve_binding};

use crate::operator::{OperatorError, node_named};
use crate::store;

/// The standby hosts the recovery of `main_node_id` may bring up, in order: the reserves bound
/// to it (highest priority first), then the powered-off pool (longest parked first, so hosts
/// take turns).
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
    let pool = node::Entity::find()
        .filter(node::Column::PoolMember.eq(true))
        .filter(node::Column::State.eq(NodeState::Reserve))
        .filter(node::Column::Id.ne(main_node_id))
        .order_by_asc(node::Column::StateChangedAt)
        .order_by_asc(node::Column::Id)
        .all(db)
        .await?;
    for member in pool {
        if !reserves.iter().any(|reserve| reserve.id == member.id) {
            reserves.push(member);
        }
    }
    Ok(reserves)
}

/// Records the MAC address `node` boots from over PXE when it is brought up (`None`: it
/// boots from its disk).
async fn set_boot_mac<C: sea_orm::ConnectionTrait>(
    conn: &C,
    node_id: i64,
    boot_mac: Option<aos_power::MacAddress>,
) -> Result<(), sea_orm::DbErr> {
    if let Some(mac) = boot_mac {
        node::Entity::update_many()
            .col_expr(node::Column::BootMac, sea_orm::sea_query::Expr::value(mac.to_string()))
            .filter(node::Column::Id.eq(node_id))
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// `reserve pool add NODE [--boot-mac MAC]`: `NODE` may be parked (disabled in Nova and powered
/// off) once it has had no instances for `[node_sync] reserve_interval`; it needs a power device
/// to come back.
pub async fn pool_add(
    db: &aos_db::DatabaseConnection,
    fencer: &dyn crate::fence::Fencer,
    name: &str,
    boot_mac: Option<aos_power::MacAddress>,
    actor: &str,
) -> Result<(), OperatorError> {
    let node = node_named(db, name).await?;
    let target = crate::fence::FenceTarget { node_id: node.id, node: node.name.clone() };
    let has_device = fencer.has_power_device(&target).await.map_err(OperatorError::Refused)?;
    if !has_device {
        return Err(OperatorError::Refused(format!(
            "{name} has no power device: a parked host could not be powered on again \
             (bind one first: node init {name} --device DEVICE)"
        )));
    }
    let transaction = aos_db::begin_write(db).await.map_err(|e| OperatorError::Refused(e.to_string()))?;
    node::Entity::update_many()
        .col_expr(node::Column::PoolMember, sea_orm::sea_query::Expr::value(true))
        .filter(node::Column::Id.eq(node.id))
        .exec(&transaction)
        .await?;
    set_boot_mac(&transaction, node.id, boot_mac).await?;
    if !node.pool_member {
        let event = store::Event {
            node_id: node.id,
            kind: "pool_joined",
            from: None,
            to: None,
            actor,
            reason: "may be parked in the powered-off reserve pool when idle",
            task_id: None,
            details: json!({ "boot_mac": boot_mac.map(|mac| mac.to_string()) }),
        };
        store::record_event(&transaction, event, Utc::now()).await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// `reserve pool remove NODE`: no longer parked when idle. A host parked now stays powered off
/// in state `reserve` until a recovery needs it or an operator returns it (`power on NODE`,
/// enable its nova-compute, `node recover NODE`).
pub async fn pool_remove(db: &aos_db::DatabaseConnection, name: &str, actor: &str) -> Result<NodeState, OperatorError> {
    let node = node_named(db, name).await?;
    if !node.pool_member {
        return Err(OperatorError::Refused(format!("{name} is not in the reserve pool")));
    }
    let transaction = aos_db::begin_write(db).await.map_err(|e| OperatorError::Refused(e.to_string()))?;
    node::Entity::update_many()
        .col_expr(node::Column::PoolMember, sea_orm::sea_query::Expr::value(false))
        .col_expr(node::Column::IdleSince, sea_orm::sea_query::Expr::value(Option::<chrono::DateTime<Utc>>::None))
        .filter(node::Column::Id.eq(node.id))
        .exec(&transaction)
        .await?;
    let event = store::Event {
        node_id: node.id,
        kind: "pool_left",
        from: None,
        to: None,
        actor,
        reason: "no longer parked when idle",
        task_id: None,
        details: Value::Null,
    };
    store::record_event(&transaction, event, Utc::now()).await?;
    transaction.commit().await?;
    Ok(node.state)
}

/// A host of the reserve pool, as `reserve pool list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    pub name: String,
    pub state: NodeState,
    /// Since when it has had no instances (`None`: busy, or parked already).
    pub idle_since: Option<chrono::DateTime<Utc>>,
    pub boot_mac: Option<String>,
}

/// The pool members, by name.
pub async fn pool_list(db: &aos_db::DatabaseConnection) -> Result<Vec<PoolMember>, sea_orm::DbErr> {
    Ok(node::Entity::find()
        .filter(node::Column::PoolMember.eq(true))
        .order_by_asc(node::Column::Name)
        .all(db)
        .await?
        .into_iter()
        .map(|member| PoolMember {
            name: member.name,
            state: member.state,
            idle_since: member.idle_since,
            boot_mac: member.boot_mac,
        })
        .collect())
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
    boot_mac: Option<aos_power::MacAddress>,
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
    set_boot_mac(&transaction, reserve.id, boot_mac).await?;
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
