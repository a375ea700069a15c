//! The high-availability core of aos-cloud-manager (docs/adr/0010-ha-core.md, DESIGN.md §3).
//!
//! - [`tracker`]: the node tracker's round (beat, lease holder): verdicts, debounce, storm
//!   guard, policy, and the `recover_node` task for a confirmed-down node.
//! - [`recovery`]: that task (worker): isolation check, claim, fence, force-down, plan,
//!   evacuation by priority group, each step resumable.
//! - [`cloud`], [`fence`], [`isolation`]: the interfaces to Nova, the power layer and the
//!   node state files; [`sim`] implements all three for the demo and the benchmarks.
//! - [`pool`]: the powered-off reserve pool (idle hosts parked by a `park_node` task).
//! - [`machine`], [`verdict`], [`plan`]: the pure rules, unit-tested without I/O.

pub mod cloud;
pub mod daemon;
pub mod fence;
pub mod isolation;
pub mod machine;
pub mod operator;
pub mod plan;
pub mod pool;
pub mod power;
pub mod recovery;
pub mod reserve;
pub mod sim;
pub mod storage;
pub mod store;
pub mod tracker;
pub mod verdict;

use std::sync::Arc;

pub use cloud::{Cloud, CloudError, CloudServer, HostObservation, LazyCloud, OpenStackCloud, RECOVERY_PRIORITY_KEY};
pub use fence::{FenceError, FenceReport, FenceTarget, Fencer, NoPowerDevices};
pub use isolation::{NoStorages, StateFileReading, StateFiles};
pub use machine::{Hold, TrackerRules};
pub use power::PowerFencer;
pub use recovery::{Recovery, RecoverySettings};
pub use storage::StorageStateFiles;
pub use tracker::{RECOVER_NODE, RecoverNode, RoundReport, tracker_round};

/// Registers the HA task kinds on a worker's runner.
pub fn register_tasks(runner: aos_jobs::JobRunner, recovery: Recovery) -> aos_jobs::JobRunner {
    let recovery = Arc::new(recovery);
    let parker = Arc::clone(&recovery);
    runner
        .register(RECOVER_NODE, move |context| {
            let recovery = Arc::clone(&recovery);
            async move { recovery.run(context).await }
        })
        .register(pool::PARK_NODE, move |context| {
            let parker = Arc::clone(&parker);
            async move { parker.park(context).await }
        })
}
