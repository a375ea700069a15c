//! `drs_audits`: one request to a DRS source (our planner or OpenStack Watcher) for
//! recommendations on one scope. docs/adr/0015-drs.md.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "drs_audits")]
pub struct Model {
    /// A UUID in text form.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The aggregate audited; `""` for every aggregate.
    pub scope: String,
    /// `planner` or `watcher`.
    pub source: String,
    pub state: DrsAuditState,
    /// `operator` (CLI, API) or `beat` (`[drs_trigger]`).
    pub trigger: String,
    pub actor: String,
    /// Watcher's audit uuid.
    pub external_id: Option<String>,
    /// What the source was asked (Watcher's goal, strategy and parameters).
    pub parameters: Option<Json>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum DrsAuditState {
    /// Asked; the source has not answered yet.
    #[sea_orm(string_value = "ongoing")]
    Ongoing,
    /// Answered (with or without an action plan).
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
}

super::string_enum_text!(DrsAuditState, "DRS audit state");
