//! `nodes`: one row per Nova hypervisor, with the state machine's current state and the
//! debounce counters the node tracker keeps between loops.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The Nova hypervisor host name; unique.
    #[sea_orm(unique)]
    pub name: String,
    pub state: NodeState,
    pub state_changed_at: DateTimeUtc,
    /// Nova's compute service id (a UUID at recent microversions).
    pub nova_service_id: Option<String>,
    /// Nova's service status as last seen: `enabled` / `disabled`.
    pub nova_status: Option<String>,
    /// Nova's service state as last seen: `up` / `down`.
    pub nova_state: Option<String>,
    pub nova_forced_down: bool,
    pub hypervisor_id: Option<String>,
    /// Per-node policy switch: false = never evacuate automatically.
    pub evacuation_allowed: bool,
    pub is_reserve: bool,
    /// Consecutive "down" observations (debounce towards `down`, `[node_tracker] mutex`).
    pub down_observations: i32,
    /// Consecutive "up" observations (debounce back to `up`, `mutex_up`).
    pub up_observations: i32,
    /// Nova no longer lists this host; the row is kept for its history.
    pub removed_from_nova: bool,
    /// An operator allowed this host into the powered-off reserve pool (`reserve pool add`):
    /// idle for `[node_sync] reserve_interval`, it is disabled and powered off.
    pub pool_member: bool,
    /// When the beat first saw this pool member without instances; `None` while it has some.
    pub idle_since: Option<DateTimeUtc>,
    /// The MAC address this host boots from over PXE when it is brought up as a reserve.
    pub boot_mac: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    #[sea_orm(has_many)]
    pub events: HasMany<super::node_event::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

/// Where a node is in the HA state machine (DESIGN.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Healthy as far as Nova and we can tell.
    #[sea_orm(string_value = "up")]
    Up,
    /// Nova says down; counting consecutive observations before believing it.
    #[sea_orm(string_value = "suspect")]
    Suspect,
    /// Down confirmed; the decision rules (storm guard, isolation check, policy) run next.
    #[sea_orm(string_value = "down")]
    Down,
    #[sea_orm(string_value = "fencing")]
    Fencing,
    /// Powered off and verified off.
    #[sea_orm(string_value = "fenced")]
    Fenced,
    #[sea_orm(string_value = "evacuating")]
    Evacuating,
    #[sea_orm(string_value = "evacuated")]
    Evacuated,
    #[sea_orm(string_value = "power_cycling")]
    PowerCycling,
    /// Back on; waiting for `mutex_up` consecutive "up" observations.
    #[sea_orm(string_value = "recovering")]
    Recovering,
    /// Taken out by an operator; the tracker leaves it alone.
    #[sea_orm(string_value = "maintenance")]
    Maintenance,
    /// Standby host, powered off, ready to be booted when capacity is short.
    #[sea_orm(string_value = "reserve")]
    Reserve,
    #[sea_orm(string_value = "reserve_booting")]
    ReserveBooting,
    #[sea_orm(string_value = "disabled")]
    Disabled,
    /// Fencing failed; evacuation stopped until an operator decides.
    #[sea_orm(string_value = "fence_failed")]
    FenceFailed,
    /// Evacuation failed; needs an operator.
    #[sea_orm(string_value = "evacuation_failed")]
    EvacuationFailed,
}

super::string_enum_text!(NodeState, "node state");
