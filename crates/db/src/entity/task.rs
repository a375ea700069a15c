//! `tasks`: one row per long operation (fence, evacuate, live-migrate, reserve bring-up,
//! DRS apply). A worker claims a task (`claimed_by`, `heartbeat_at`); a task whose
//! heartbeat stops is resumed by another worker, which skips its succeeded steps.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    /// A UUID in text form.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `evacuate_host`, `fence_node`, `live_migrate`, ...
    pub kind: String,
    /// NULL for tasks not about one node, or once the node record is deleted.
    pub node_id: Option<i64>,
    pub state: TaskState,
    pub payload: Option<Json>,
    pub result: Option<Json>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// How many times a worker started (or resumed) it.
    pub attempts: i32,
    /// Worker identity (`worker@host:pid`) holding the task while `running`.
    pub claimed_by: Option<String>,
    pub claimed_at: Option<DateTimeUtc>,
    pub heartbeat_at: Option<DateTimeUtc>,
    /// Callers that may submit twice (API retries, a beat re-deciding) pass a key; a second
    /// submission with the same key is rejected by the unique index.
    #[sea_orm(unique)]
    pub idempotency_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    #[sea_orm(has_many)]
    pub steps: HasMany<super::task_step::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl TaskState {
    /// A finished task is never picked up again.
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }
}

super::string_enum_text!(TaskState, "task state");
