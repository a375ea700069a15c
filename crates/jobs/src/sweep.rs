//! The sweep: the beat's periodic repair of the queue from the `tasks` table. It republishes
//! the message of every task that should be moving and is not: `pending` for longer than a
//! threshold (its publish failed, or its message was lost or dropped as a duplicate while
//! another worker still held it), and `running` with a stale heartbeat (its worker died).
//! Duplicate messages this may create are harmless: the claim lets one through.
//!
//! Only the lease holder sweeps (the beat's lease); the selection is made in a transaction
//! fenced by the lease generation (`aos_db::guard_lease`), so a beat that lost its lease
//! selects nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::{JobQueue, JobsError, store};

/// Tasks selected per call; a larger backlog is handled over the following calls.
const SWEEP_BATCH: u64 = 500;

/// The lease the caller holds while sweeping: its name and the generation it was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseFence<'a> {
    pub name: &'a str,
    pub generation: i64,
}

/// Republishes orphaned tasks (see the module header) and returns how many were published.
///
/// `pending_older_than` is also the shortest interval between two republishes of one task:
/// a selected task's `updated_at` is set to `now`, so a task waiting behind a long queue is
/// not republished at every call. `running_stale_after` should be the runners'
/// `stale_after`. Fails with [`JobsError::Database`] (`LeaseLost`) if `lease` is no longer
/// held; stops at the first failed publish (the broker is likely down; the tasks not
/// published are selected again one interval later).
pub async fn requeue_orphans(
    db: &DatabaseConnection,
    queue: &JobQueue,
    lease: LeaseFence<'_>,
    now: DateTime<Utc>,
    pending_older_than: Duration,
    running_stale_after: Duration,
) -> Result<usize, JobsError> {
    let republish_before = crate::time_before(now, pending_older_than);
    let stale_before = crate::time_before(now, running_stale_after);
    let task_ids =
        store::select_for_republish(db, lease.name, lease.generation, now, republish_before, stale_before, SWEEP_BATCH)
            .await?;
    let mut published = 0;
    for task_id in &task_ids {
        queue.publish(*task_id).await?;
        published += 1;
    }
    if published > 0 {
        tracing::info!(published, "republished orphaned tasks");
    }
    Ok(published)
}
