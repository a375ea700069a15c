//! `leases`: named singleton roles (the active beat, the active agent) with their current
//! holder, expiry and fencing generation. Only `crate::lease` writes this table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Identity of the holder (`beat@ctl1:1234`); meaningless once `expires_at` has passed.
    pub holder: String,
    /// Incremented at every change of tenure; 0 = never held.
    pub generation: i64,
    pub acquired_at: DateTimeUtc,
    pub renewed_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
