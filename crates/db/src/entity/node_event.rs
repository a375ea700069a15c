//! `node_events`: the story of a node, one row per state transition or notable observation,
//! with who (actor) and why (reason), so an operator can read a whole incident.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "node_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub node_id: i64,
    pub occurred_at: DateTimeUtc,
    /// What happened: `state_changed`, `nova_down_observed`, `power_off`, ...
    pub kind: String,
    /// States as stored in `nodes.state`; NULL for events that are not transitions.
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    /// Who caused it: a daemon (`beat@ctl1`), a user (`admin`), `nova`.
    pub actor: String,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    /// The task this event is part of, if any (no foreign key: events outlive purged tasks).
    pub task_id: Option<String>,
    pub details: Option<Json>,
    #[sea_orm(belongs_to, from = "node_id", to = "id")]
    pub node: BelongsTo<super::node::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
