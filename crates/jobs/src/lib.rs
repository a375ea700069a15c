//! The jobs layer of aos-cloud-manager: long operations (fence, evacuate, migrate, ...) as
//! tasks that survive any one daemon. Decision: docs/adr/0004-jobs.md.
//!
//! - The `tasks` row (with its `task_steps`) is the source of truth. [`enqueue`] records it
//!   and commits **before** publishing a [`JobMessage`], which carries only the task id.
//! - The queue ([`JobQueue`]) is RabbitMQ in production and apalis-sqlite in the embedded
//!   single-node setup; apalis executes the deliveries on the workers ([`JobRunner`]).
//! - A worker claims the row atomically before running the [`TaskHandler`] for its kind, and
//!   keeps a heartbeat while it runs; [`TaskContext::step`] records each step so that a task
//!   resumed elsewhere never repeats a step that succeeded.
//! - The beat's sweep ([`requeue_orphans`]) republishes what is pending too long or whose
//!   worker died, so a lost or failed publish only delays a task.
//!
//! This crate belongs to the data layer: it owns the statements on `tasks`/`task_steps`
//! (module `store`) and uses sea-orm directly, next to `aos-db`.

mod drive;
mod enqueue;
mod error;
mod handler;
mod message;
mod queue;
mod runner;
mod store;
mod sweep;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub use enqueue::{NewTask, cancel_task, enqueue, find_task, insert_task};
pub use error::JobsError;
pub use handler::{HandlerFuture, TaskContext, TaskError, TaskHandler};
pub(crate) use message::{Inbound, TolerantJsonCodec};
pub use message::{JobMessage, TaskId};
pub use queue::{DeadLetter, JobQueue};
pub use runner::{JobCounters, JobRunner, ProcessOutcome, RunnerSettings};
pub use store::Recorded;
pub use sweep::{LeaseFence, requeue_orphans};

/// `now - age`, saturating at the earliest representable time instead of panicking on
/// absurd ages.
pub(crate) fn time_before(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(age).ok().and_then(|age| now.checked_sub_signed(age)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_before_saturates_instead_of_panicking_on_absurd_ages() {
        let now = Utc::now();
        assert_eq!(time_before(now, Duration::from_secs(60)), now - TimeDelta::seconds(60));
        assert_eq!(time_before(now, Duration::MAX), DateTime::<Utc>::MIN_UTC);
    }
}
