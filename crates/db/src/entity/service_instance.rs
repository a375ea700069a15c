//! `service_instances`: every running daemon process (role, host, pid) with its lifecycle
//! state and last heartbeat, for `/readyz`, the CLI and detecting dead workers.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "service_instances")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `api`, `listener`, `beat`, `worker`, `agent`.
    pub role: String,
    pub host: String,
    pub pid: i64,
    pub started_at: DateTimeUtc,
    pub heartbeat_at: DateTimeUtc,
    pub state: ServiceInstanceState,
    pub details: Option<Json>,
}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum ServiceInstanceState {
    #[sea_orm(string_value = "starting")]
    Starting,
    #[sea_orm(string_value = "ready")]
    Ready,
    #[sea_orm(string_value = "stopping")]
    Stopping,
}

super::string_enum_text!(ServiceInstanceState, "service instance state");
