//! Balancing of host aggregates (DESIGN.md §4, docs/adr/0014-balancing.md).
//!
//! - [`planner`]: the pure planner — hosts, servers and server groups in, an ordered list of
//!   live migrations out, bringing every host inside the band with the fewest migrations and
//!   then the fewest MB moved, never violating capacity or anti-affinity. No I/O.
//! - [`model`]: its input and output types.
//! - [`gather`]: the planner's input read from Nova and Placement in a fixed number of bulk
//!   calls.
//! - [`execute`]: the `balance_aggregate` task that carries a plan out with live migrations
//!   (bounded concurrency, Nova's migration records, retries), one resumable step each.
//!
//! Not here yet: the periodic balancing job of the beat (`[balancing] enabled`,
//! `periodic_time`), re-planning when the cloud changed under a running plan, and DRS audits
//! and action plans (issue 7's later parts).

pub mod execute;
pub mod gather;
pub mod model;
pub mod planner;

pub use execute::{
    BALANCE_AGGREGATE, BalanceTask, ExecuteSettings, MigrationOutcome, register_tasks, register_tasks_when_connected,
};
pub use gather::{BALANCING_DENY, BALANCING_METADATA_KEY, CloudSnapshot, GatherError, Gathered, LeftOut};
pub use model::{
    BalanceInput, Capacity, GroupPolicy, Host, HostReport, Plan, PlanError, PlannedMigration, PlannerSettings, Server,
    ServerGroup,
};
pub use planner::plan;

impl PlannerSettings {
    /// The planner's settings from a validated `[balancing]` section.
    pub fn from_config(balancing: &aos_config::BalancingSection) -> Self {
        Self { approx: balancing.approx, vcpu_weight: balancing.vcpu_weight }
    }
}
