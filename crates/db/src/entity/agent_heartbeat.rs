//! `agent_heartbeats`: the last heartbeat of every node agent, written by the active controller
//! agent (lease `agent`) and read by the node tracker as the `agent_alive` signal. A node
//! without a row runs no agent. docs/adr/0012-agent.md.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "agent_heartbeats")]
pub struct Model {
    /// Nova's hypervisor host name, as the agent names itself (and as the broker authenticated).
    #[sea_orm(primary_key, auto_increment = false)]
    pub node: String,
    pub message_id: String,
    /// The agent's counter since it started; a smaller value than before means a restart.
    pub sequence: i64,
    /// By the node's clock (informational only).
    pub sent_at: DateTimeUtc,
    /// By the recording controller's clock.
    pub received_at: DateTimeUtc,
    /// `received_at + [agent] heartbeat_stale_after`: after this the agent counts as silent.
    pub expires_at: DateTimeUtc,
    pub facts: Option<Json>,
}

impl ActiveModelBehavior for ActiveModel {}
