//! `node_power_bindings`: which power device (and outlet) powers which node. A node may have
//! several (dual PSUs on two PDU outlets); `is_default` marks the one fencing uses first.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "node_power_bindings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub node_id: i64,
    pub power_device_id: i64,
    /// Outlet on a PDU; `""` for a device that powers just this node (a BMC).
    pub outlet: String,
    pub is_default: bool,
    #[sea_orm(belongs_to, from = "node_id", to = "id")]
    pub node: BelongsTo<super::node::Entity>,
    #[sea_orm(belongs_to, from = "power_device_id", to = "id")]
    pub power_device: BelongsTo<super::power_device::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
