//! `reserve_bindings`: which standby (reserve) node is brought up first when a given main
//! node fails and capacity is short.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "reserve_bindings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub reserve_node_id: i64,
    pub main_node_id: i64,
    /// Higher first when several reserves back one main node.
    pub priority: i32,
    #[sea_orm(belongs_to, relation_enum = "ReserveNode", from = "reserve_node_id", to = "id")]
    pub reserve_node: BelongsTo<super::node::Entity>,
    #[sea_orm(belongs_to, relation_enum = "MainNode", from = "main_node_id", to = "id")]
    pub main_node: BelongsTo<super::node::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
