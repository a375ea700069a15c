//! `drs_actions`: one action of an action plan (a live migration), with its own state.
//! docs/adr/0015-drs.md.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "drs_actions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub plan_id: String,
    /// 1-based order inside the plan.
    pub position: i32,
    /// `live_migrate`.
    pub kind: String,
    pub server_id: String,
    pub server_name: String,
    pub source_host: Option<String>,
    /// `None`: the scheduler chooses.
    pub target_host: Option<String>,
    pub ram_mb: i64,
    pub vcpus: i64,
    /// Watcher's action uuid.
    pub external_id: Option<String>,
    pub state: DrsActionState,
    /// The migration's outcome (attempts, Nova's migration record, time, why skipped).
    pub details: Option<Json>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum DrsActionState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Not done: the cloud changed since the plan (the server moved, ...).
    #[sea_orm(string_value = "skipped")]
    Skipped,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

super::string_enum_text!(DrsActionState, "DRS action state");
