//! Submitting work (and withdrawing it): record the task row first (committed), then
//! publish its message.
//!
//! The order is the whole point. A message published before its row is committed could
//! reach a worker that finds nothing; a row committed before a publish that fails is only
//! late: it stays `pending`, and the beat's sweep ([`crate::requeue_orphans`]) publishes it
//! again. So a task, once [`enqueue`] returned its id, is never lost.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::Value;

use crate::store::{self, Recorded};
use crate::{JobQueue, JobsError, TaskId};

/// A task to submit.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// Selects the handler on the worker (`evacuate_host`, `fence_node`, ...).
    pub kind: String,
    /// The node the task is about, if any (`tasks.node_id`).
    pub node_id: Option<i64>,
    /// The handler's input, stored in `tasks.payload`.
    pub payload: Value,
    /// Callers that may submit the same thing twice (an API retry, a beat deciding again)
    /// pass a key: a second submission with it returns the first task's id and publishes
    /// nothing.
    pub idempotency_key: Option<String>,
}

impl NewTask {
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        NewTask { kind: kind.into(), node_id: None, payload, idempotency_key: None }
    }

    pub fn node_id(mut self, node_id: i64) -> Self {
        self.node_id = Some(node_id);
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// Records the task (state `pending`) and publishes its message. Returns the task's id,
/// or the existing task's id when the idempotency key was used before (nothing is
/// published then).
///
/// `Ok` means the task is durably recorded and will run: if publishing fails the error is
/// logged and the sweep publishes it later. `Err` means nothing was recorded.
pub async fn enqueue(db: &DatabaseConnection, queue: &JobQueue, new: NewTask) -> Result<TaskId, JobsError> {
    let Recorded { task_id, created } = store::insert_task(db, &new, Utc::now()).await?;
    if !created {
        tracing::debug!(%task_id, kind = %new.kind, "idempotency key already used; not publishing again");
        return Ok(task_id);
    }
    if let Err(error) = queue.publish(task_id).await {
        tracing::warn!(
            %task_id,
            kind = %new.kind,
            error = %format!("{error:#}"),
            "task recorded but not published; the sweep will publish it"
        );
    }
    Ok(task_id)
}

/// The first half of [`enqueue`], for callers that record a task inside their own
/// transaction (e.g. together with the node state change that decided it) and call
/// [`JobQueue::publish`] after their commit. If they never publish, the sweep does.
pub async fn insert_task<C: ConnectionTrait>(conn: &C, new: &NewTask) -> Result<Recorded, JobsError> {
    store::insert_task(conn, new, Utc::now()).await
}

/// Cancels a task that is pending or running; returns false if it had already finished (or
/// does not exist). A pending task is never started; a running one is abandoned by its
/// worker at the next heartbeat (its handler is dropped mid-way, so steps in flight may or
/// may not have happened; succeeded steps stay recorded).
pub async fn cancel_task(db: &DatabaseConnection, task_id: TaskId) -> Result<bool, JobsError> {
    store::cancel(db, task_id, Utc::now()).await
}

/// The task row of `task_id`, if it exists (for `task show`, tests and callers that wait).
pub async fn find_task(
    db: &DatabaseConnection,
    task_id: TaskId,
) -> Result<Option<aos_db::entity::task::Model>, JobsError> {
    crate::store::find_task(db, task_id).await
}
