//! `alarms`: conditions an operator must see and clear (storm guard tripped, fence failed,
//! evacuation failed, storage unreachable). Active while `cleared_at` is NULL.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "alarms")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `storm_guard`, `fence_failed`, `evacuation_failed`, ...
    pub kind: String,
    /// `info`, `warning`, `critical`.
    pub severity: String,
    /// NULL for cluster-wide alarms, or once the node record is deleted.
    pub node_id: Option<i64>,
    #[sea_orm(column_type = "Text")]
    pub message: String,
    pub details: Option<Json>,
    pub raised_at: DateTimeUtc,
    pub cleared_at: Option<DateTimeUtc>,
    pub cleared_by: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
