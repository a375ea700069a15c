//! `node_storage_bindings`: which nodes write state files to which availability storage,
//! with the time of the newest state file seen.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "node_storage_bindings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub node_id: i64,
    pub storage_id: i64,
    /// Modification time of the node's state file as last read; NULL = not seen yet.
    pub state_file_at: Option<DateTimeUtc>,
    #[sea_orm(belongs_to, from = "node_id", to = "id")]
    pub node: BelongsTo<super::node::Entity>,
    #[sea_orm(belongs_to, from = "storage_id", to = "id")]
    pub storage: BelongsTo<super::availability_storage::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
