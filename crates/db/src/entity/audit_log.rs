//! `audit_log`: every state-changing API/CLI action with who asked (Keystone user and
//! project), the request id that ties it to logs, and how it ended.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub occurred_at: DateTimeUtc,
    /// `req-<uuid>` as in OpenStack logs.
    pub request_id: String,
    pub user_id: String,
    pub project_id: String,
    /// e.g. `node.evacuate`, `power_device.create`.
    pub action: String,
    pub target: Option<String>,
    /// `accepted`, `succeeded`, `denied`, `failed`.
    pub outcome: String,
    /// Request parameters with secrets removed by the caller.
    pub details: Option<Json>,
}

impl ActiveModelBehavior for ActiveModel {}
