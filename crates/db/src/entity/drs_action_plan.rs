//! `drs_action_plans`: what an audit recommends, and how far it got:
//! recommended → applying → succeeded / failed; a recommended plan becomes superseded when a
//! newer plan of the same scope is recorded, or cancelled by an operator. docs/adr/0015-drs.md.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "drs_action_plans")]
pub struct Model {
    /// A UUID in text form.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub audit_id: String,
    /// The audit's scope (an aggregate, `""` for every aggregate).
    pub scope: String,
    pub source: String,
    pub state: DrsPlanState,
    /// Watcher's action plan uuid.
    pub external_id: Option<String>,
    /// The task applying it (`tasks.id`).
    pub task_id: Option<String>,
    /// The source's summary (loads before and after, hosts left loaded, ...).
    pub summary: Option<Json>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum DrsPlanState {
    #[sea_orm(string_value = "recommended")]
    Recommended,
    #[sea_orm(string_value = "applying")]
    Applying,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    /// A newer plan of the same scope was recorded while this one was only recommended.
    #[sea_orm(string_value = "superseded")]
    Superseded,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl DrsPlanState {
    /// Nothing will happen to a plan in a final state any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Superseded | Self::Cancelled)
    }
}

super::string_enum_text!(DrsPlanState, "DRS action plan state");
