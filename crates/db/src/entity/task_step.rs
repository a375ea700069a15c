//! `task_steps`: the unit of idempotence. A step is identified by (task, name, target), e.g.
//! (`t1`, `evacuate_instance`, `<instance uuid>`); a resumed task skips every step already
//! `succeeded`, and the unique index makes recording a step twice impossible.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "task_steps")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub task_id: String,
    /// Order of execution within the task.
    pub seq: i32,
    pub name: String,
    /// What the step acts on; `""` when it has no target (not NULL, so the unique index
    /// deduplicates it).
    pub target: String,
    pub state: TaskStepState,
    pub attempts: i32,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub details: Option<Json>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    #[sea_orm(belongs_to, from = "task_id", to = "id")]
    pub task: BelongsTo<super::task::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum TaskStepState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "running")]
    Running,
    /// Done; a resumed task skips it.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Deliberately not done (e.g. an instance with recovery priority 0).
    #[sea_orm(string_value = "skipped")]
    Skipped,
}

super::string_enum_text!(TaskStepState, "task step state");
