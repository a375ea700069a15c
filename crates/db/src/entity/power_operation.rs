//! `power_operations`: every power action this suite issued. The node tracker reads them to
//! know which "down" transitions we caused ourselves (a fence, a reserve shutdown) so they
//! are not mistaken for failures.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "power_operations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// NULL once the node record is deleted (the operation stays in the history).
    pub node_id: Option<i64>,
    pub power_device_id: i64,
    /// `on`, `off`, `reset`, `cycle`, `status`, `bootdev_pxe`, ...
    pub operation: String,
    pub requested_at: DateTimeUtc,
    /// NULL while in flight.
    pub finished_at: Option<DateTimeUtc>,
    /// `succeeded`, `failed`, `timed_out`; NULL while in flight.
    pub result: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub actor: String,
    pub task_id: Option<String>,
    #[sea_orm(belongs_to, from = "power_device_id", to = "id")]
    pub power_device: BelongsTo<super::power_device::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
