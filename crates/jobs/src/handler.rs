//! What task code sees: the [`TaskHandler`] trait a kind of task implements, the
//! [`TaskError`] it returns, and the [`TaskContext`] it works through, whose
//! [`step`](TaskContext::step) is the unit of idempotence.
//!
//! A handler may be run more than once for one task: after a retryable error, after its
//! worker died, after a redelivered message. Everything with an effect outside the
//! database (power off a node, evacuate a server) goes inside a step, so that the run
//! that resumes the task skips what already succeeded instead of doing it again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use aos_db::entity::{TaskStepState, task};

use crate::TaskId;
use crate::store::{self, Claim};

/// How a handler (or a step) failed, which decides what happens to the task.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// Worth trying again (an API timed out, a service was briefly down): the task goes
    /// back to `pending` and runs again after a backoff, until the attempt budget
    /// (`RunnerSettings::max_attempts`) is spent; then it is `failed`.
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help (bad payload, the node does not exist): the task is
    /// `failed` now.
    #[error("{0}")]
    Fatal(String),
}

impl TaskError {
    pub fn retryable(error: impl std::fmt::Display) -> Self {
        TaskError::Retryable(error.to_string())
    }

    pub fn fatal(error: impl std::fmt::Display) -> Self {
        TaskError::Fatal(error.to_string())
    }
}

/// The future a handler returns: the task's result (stored in `tasks.result`) or why it
/// failed.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;

/// The code for one kind of task, registered with [`crate::JobRunner::register`].
///
/// Implemented for every `Fn(TaskContext) -> impl Future<Output = Result<Value, TaskError>>`,
/// so a handler is usually an async closure or function.
pub trait TaskHandler: Send + Sync + 'static {
    fn run(&self, context: TaskContext) -> HandlerFuture;
}

impl<F, Fut> TaskHandler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    fn run(&self, context: TaskContext) -> HandlerFuture {
        Box::pin(self(context))
    }
}

/// One run of one task: its row as claimed, and access to its steps. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    db: DatabaseConnection,
    claim: Claim,
    task: task::Model,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.inner.claim.task_id)
            .field("kind", &self.inner.task.kind)
            .field("attempt", &self.inner.claim.attempt)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    pub(crate) fn new(db: DatabaseConnection, claim: Claim, task: task::Model) -> Self {
        TaskContext { inner: Arc::new(ContextInner { db, claim, task }) }
    }

    pub fn task_id(&self) -> TaskId {
        self.inner.claim.task_id
    }

    pub fn kind(&self) -> &str {
        &self.inner.task.kind
    }

    pub fn node_id(&self) -> Option<i64> {
        self.inner.task.node_id
    }

    /// The payload given at enqueue (`null` if none was stored).
    pub fn payload(&self) -> &Value {
        self.inner.task.payload.as_ref().unwrap_or(&Value::Null)
    }

    /// The payload as a typed value; a payload that does not fit is a fatal error (running
    /// again cannot change it).
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        T::deserialize(self.payload())
            .map_err(|error| TaskError::Fatal(format!("payload of {} task is invalid: {error}", self.kind())))
    }

    /// Which run of the task this is (1 for the first; `tasks.attempts`).
    pub fn attempt(&self) -> i32 {
        self.inner.claim.attempt
    }

    /// The identity of the worker running it (`tasks.claimed_by`).
    pub fn worker(&self) -> &str {
        &self.inner.claim.worker
    }

    /// Runs `run` as the step `(name, target)` of this task, at most once to success.
    ///
    /// If the step already succeeded (in this run or an earlier one, on any worker) its
    /// stored result is returned and `run` is not called. Otherwise the step is recorded
    /// as running, `run` is called, and its result (as JSON in `task_steps.details`) or
    /// error is recorded. `target` tells apart repetitions of one kind of step (the
    /// server being evacuated); use `""` for a step done once per task.
    ///
    /// A step is exactly-once only up to the crash window: if the worker dies after the
    /// effect happened but before the success was recorded, the resumed task runs the step
    /// again, so `run` should tolerate finding its work done (e.g. a server already on
    /// another host).
    pub async fn step<T, F, Fut>(&self, name: &str, target: &str, run: F) -> Result<T, TaskError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, TaskError>>,
    {
        let db = &self.inner.db;
        let claim = &self.inner.claim;
        let existing = store::find_step(db, claim.task_id, name, target).await.map_err(bookkeeping)?;
        if let Some(step) = &existing
            && step.state == TaskStepState::Succeeded
        {
            let details = step.details.clone().unwrap_or(Value::Null);
            return serde_json::from_value(details).map_err(|error| {
                TaskError::Fatal(format!(
                    "step {name} {target:?} succeeded earlier but its stored result does not fit: {error}"
                ))
            });
        }
        if !store::start_step(db, claim, name, target, existing.as_ref(), Utc::now()).await.map_err(bookkeeping)? {
            // Another worker resumed the task; whatever this run does now is not wanted.
            return Err(TaskError::Retryable(format!("lost the claim on task {} before step {name}", claim.task_id)));
        }
        match run().await {
            Ok(value) => {
                let details = serde_json::to_value(&value)
                    .map_err(|error| TaskError::Fatal(format!("step {name} result is not serialisable: {error}")))?;
                store::record_step_succeeded(db, claim.task_id, name, target, &details, Utc::now())
                    .await
                    .map_err(bookkeeping)?;
                Ok(value)
            }
            Err(error) => {
                if let Err(record_error) =
                    store::record_step_failed(db, claim, name, target, &error.to_string(), Utc::now()).await
                {
                    tracing::warn!(
                        task_id = %claim.task_id,
                        step = name,
                        target,
                        error = %format!("{record_error:#}"),
                        "cannot record a failed step"
                    );
                }
                Err(error)
            }
        }
    }
}

/// A failure of the step bookkeeping itself (the database) is worth retrying.
fn bookkeeping(error: crate::JobsError) -> TaskError {
    TaskError::Retryable(format!("recording task progress failed: {error:#}"))
}
