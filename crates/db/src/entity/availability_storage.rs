//! `availability_storages`: shared storages where each node writes a state file; a fresh
//! file proves a node is alive even when the control plane cannot see it (isolation check).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "availability_storages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    /// Mount path on the nodes.
    pub path: String,
    /// Result of the last storage sync; NULL = never checked.
    pub reachable: Option<bool>,
    pub last_checked_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
