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
//! - [`drs`]: DRS audits and action plans behind one [`drs::Recommender`] interface (our
//!   planner, or OpenStack Watcher through [`watcher`]), applied by the `drs_apply_plan` task.
//! - [`recheck`]: whether a planned migration still makes sense on the cloud as it is now
//!   (the executor skips it and re-plans the remainder once when not).

pub mod drs;
pub mod execute;
pub mod gather;
pub mod model;
pub mod planner;
pub mod recheck;
pub mod watcher;

pub use execute::{
    BALANCE_AGGREGATE, BalanceTask, ExecuteSettings, MigrationOutcome, Replan, register_tasks,
    register_tasks_when_connected,
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
