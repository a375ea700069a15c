//! The worker side: [`JobRunner`] takes deliveries from the queue through apalis and runs
//! the registered [`TaskHandler`] for each task, with the `tasks` row deciding everything.
//!
//! [`JobRunner::process_one`] is the whole protocol for one message, callable on its own
//! (tests do): claim the row (or do nothing if it is finished or held by a live worker),
//! run the handler while refreshing the heartbeat, record the outcome. [`JobRunner::run`]
//! is only the loop around it: an apalis worker on the queue, restarted with backoff when
//! the broker goes away, stopped by a cancellation token.
//!
//! How an outcome maps onto apalis (and so onto the broker):
//!
//! | outcome | row | delivery |
//! |---|---|---|
//! | succeeded, or nothing to do | `succeeded` / unchanged | acknowledged |
//! | retryable error, attempts left | back to `pending` | apalis calls again after a backoff; if apalis gives up (worker stopping) it is nacked with requeue |
//! | fatal error, attempts spent, unknown kind | `failed` | rejected without requeue: to the dead-letter queue |
//! | malformed message | (none) | rejected without requeue |
//!
//! The attempt budget is counted in the row (`tasks.attempts`, one per claim), not by
//! apalis, so it holds across redeliveries and workers.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apalis::layers::retry::backoff::Backoff;
use apalis::prelude::{
    AbortError, BackendExt, BackoffRetryPolicy, BoxDynError, RetryPolicy, WorkerBuilder, WorkerBuilderExt,
    WorkerContext,
};
use chrono::Utc;
use futures::FutureExt;
use futures::future::BoxFuture;
use sea_orm::DatabaseConnection;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::drive::{CloseFirst, drive};
use crate::queue::QueueBackend;
use crate::queue::amqp::AmqpQueue;
use crate::queue::sqlite::SqliteQueue;
use crate::store::{self, Claim, Finish};
use crate::{Inbound, JobQueue, JobsError, TaskContext, TaskError, TaskHandler, TaskId, TolerantJsonCodec};

/// Timing and retry policy of a runner. The defaults suit production; tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerSettings {
    /// How often a running task's `heartbeat_at` is refreshed.
    pub heartbeat_interval: Duration,
    /// A running task whose heartbeat is older than this is presumed orphaned (its worker
    /// died or hangs) and may be claimed by another worker. Several heartbeat intervals;
    /// the sweep should be given the same value.
    pub stale_after: Duration,
    /// Runs of one task (claims) after which a retryable error fails it for good.
    pub max_attempts: u32,
    /// The delay before the first in-process retry; it doubles (with jitter) up to
    /// `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// After the shutdown token is cancelled, how long in-flight tasks may take to finish
    /// before they are abandoned (left claimed, to go stale and be resumed elsewhere).
    pub shutdown_grace: Duration,
    /// SQLite queue only: how often an idle worker looks for new jobs.
    pub sqlite_poll_interval: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            heartbeat_interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
            max_attempts: 5,
            retry_backoff: Duration::from_secs(5),
            retry_backoff_max: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            sqlite_poll_interval: Duration::from_secs(1),
        }
    }
}

/// What [`JobRunner::process_one`] did with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessOutcome {
    Succeeded,
    /// The task is `failed` for good.
    Failed {
        error: String,
    },
    /// The task went back to `pending` after a retryable error; attempts are left.
    RetryLater {
        error: String,
    },
    /// Nothing to do: the task is finished, held by a live worker, or unknown.
    Skipped,
    /// The task stopped being this worker's while it ran: another worker took it over
    /// (this one's heartbeat had gone stale) or it was cancelled. The handler was dropped
    /// at the next heartbeat, or its outcome was not recorded.
    ClaimLost,
}

/// Counts since the runner was created, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounters {
    /// Messages handled (each of the outcomes below, plus malformed messages).
    pub processed: u64,
    pub succeeded: u64,
    /// Tasks failed for good, and malformed messages.
    pub failed: u64,
    /// Tasks put back for another attempt.
    pub retried: u64,
    /// Messages that found nothing to do (duplicates, finished tasks, lost claims).
    pub skipped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    processed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    skipped: AtomicU64,
}

impl Counters {
    fn count(&self, outcome: &ProcessOutcome) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            ProcessOutcome::Succeeded => &self.succeeded,
            ProcessOutcome::Failed { .. } => &self.failed,
            ProcessOutcome::RetryLater { .. } => &self.retried,
            ProcessOutcome::Skipped | ProcessOutcome::ClaimLost => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> JobCounters {
        JobCounters {
            processed: self.processed.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

/// Runs tasks from a [`JobQueue`]. Cheap to clone; clones share handlers and counters.
#[derive(Clone)]
pub struct JobRunner {
    db: DatabaseConnection,
    queue: JobQueue,
    identity: String,
    concurrency: usize,
    settings: RunnerSettings,
    handlers: Arc<HashMap<String, Arc<dyn TaskHandler>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("identity", &self.identity)
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl JobRunner {
    /// A runner with no handlers yet. `worker_identity` (e.g. `worker@ctl1:4242`) is
    /// recorded in `tasks.claimed_by`; it must differ between concurrently running
    /// runners. `concurrency` is how many tasks run at once (at least 1).
    pub fn new(
        db: DatabaseConnection,
        queue: JobQueue,
        worker_identity: impl Into<String>,
        concurrency: usize,
    ) -> Self {
        JobRunner {
            db,
            queue,
            identity: worker_identity.into(),
            concurrency: concurrency.max(1),
            settings: RunnerSettings::default(),
            handlers: Arc::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn with_settings(mut self, settings: RunnerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Registers the handler for tasks of `kind` (replacing any earlier one).
    pub fn register(mut self, kind: impl Into<String>, handler: impl TaskHandler) -> Self {
        Arc::make_mut(&mut self.handlers).insert(kind.into(), Arc::new(handler));
        self
    }

    pub fn settings(&self) -> &RunnerSettings {
        &self.settings
    }

    pub fn counters(&self) -> JobCounters {
        self.counters.snapshot()
    }

    /// Handles one message for `task_id` (see the module header). `Err` is a failure of
    /// the database itself; the task is then repaired later by the heartbeat going stale
    /// and the sweep.
    pub async fn process_one(&self, task_id: TaskId) -> Result<ProcessOutcome, JobsError> {
        let span = tracing::info_span!("task", %task_id, kind = tracing::field::Empty, attempt = tracing::field::Empty);
        let outcome = self.process_one_inner(task_id).instrument(span).await?;
        self.counters.count(&outcome);
        Ok(outcome)
    }

    async fn process_one_inner(&self, task_id: TaskId) -> Result<ProcessOutcome, JobsError> {
        let now = Utc::now();
        let stale_before = crate::time_before(now, self.settings.stale_after);
        let Some((claim, task)) = store::claim(&self.db, task_id, &self.identity, now, stale_before).await? else {
            tracing::debug!("task is finished, held by a live worker, or unknown; nothing to do");
            return Ok(ProcessOutcome::Skipped);
        };
        let span = tracing::Span::current();
        span.record("kind", task.kind.as_str());
        span.record("attempt", claim.attempt);

        let kind = task.kind.clone();
        let started = std::time::Instant::now();
        let Some(handler) = self.handlers.get(&task.kind).cloned() else {
            let error = format!("no handler is registered for task kind {:?}", task.kind);
            let outcome = self
                .finish(&claim, Finish::Failed { error: &error }, ProcessOutcome::Failed { error: error.clone() })
                .await?;
            record_run_metrics(kind, &outcome, started.elapsed());
            return Ok(outcome);
        };
        tracing::info!("task started");
        let context = TaskContext::new(self.db.clone(), claim.clone(), task);
        let Some(result) = self.run_with_heartbeat(handler, context, &claim).await else {
            tracing::warn!("task was taken over by another worker or cancelled while running; abandoning this run");
            return Ok(ProcessOutcome::ClaimLost);
        };
        let outcome = match result {
            Ok(value) => self.finish(&claim, Finish::Succeeded { result: &value }, ProcessOutcome::Succeeded).await,
            Err(TaskError::Fatal(error)) => {
                self.finish(&claim, Finish::Failed { error: &error }, ProcessOutcome::Failed { error: error.clone() })
                    .await
            }
            Err(TaskError::Retryable(error)) if claim.attempt >= self.max_attempts() => {
                let error = format!("gave up after {} attempts: {error}", claim.attempt);
                self.finish(&claim, Finish::Failed { error: &error }, ProcessOutcome::Failed { error: error.clone() })
                    .await
            }
            Err(TaskError::Retryable(error)) => {
                self.finish(
                    &claim,
                    Finish::Retry { error: &error },
                    ProcessOutcome::RetryLater { error: error.clone() },
                )
                .await
            }
        }?;
        record_run_metrics(kind, &outcome, started.elapsed());
        Ok(outcome)
    }

    fn max_attempts(&self) -> i32 {
        i32::try_from(self.settings.max_attempts.max(1)).unwrap_or(i32::MAX)
    }

    /// Runs the handler while refreshing the heartbeat; `None` if the claim was lost
    /// meanwhile (the handler is then dropped mid-way: another worker owns the task).
    /// A panicking handler is a fatal error of its task, not of the worker.
    async fn run_with_heartbeat(
        &self,
        handler: Arc<dyn TaskHandler>,
        context: TaskContext,
        claim: &Claim,
    ) -> Option<Result<Value, TaskError>> {
        let handler_run = AssertUnwindSafe(handler.run(context)).catch_unwind().map(|result| {
            result.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(TaskError::Fatal(format!("the handler panicked: {message}")))
            })
        });
        tokio::select! {
            biased;
            result = handler_run => Some(result),
            () = keep_claim_alive(&self.db, claim, self.settings.heartbeat_interval) => None,
        }
    }

    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish<'_>,
        outcome: ProcessOutcome,
    ) -> Result<ProcessOutcome, JobsError> {
        if !store::finish(&self.db, claim, finish, Utc::now()).await? {
            tracing::warn!("task was taken over by another worker or cancelled before its outcome was recorded");
            return Ok(ProcessOutcome::ClaimLost);
        }
        match &outcome {
            ProcessOutcome::Succeeded => tracing::info!("task succeeded"),
            ProcessOutcome::Failed { error } => tracing::warn!(%error, "task failed"),
            ProcessOutcome::RetryLater { error } => tracing::info!(%error, "task will be retried"),
            ProcessOutcome::Skipped | ProcessOutcome::ClaimLost => {}
        }
        Ok(outcome)
    }

    /// One delivery, mapped onto apalis' result (see the table in the module header).
    async fn handle_delivery(&self, inbound: Inbound) -> Result<(), BoxDynError> {
        let task_id = match inbound {
            Inbound::Job(message) => message.task_id,
            Inbound::Malformed { reason } => {
                tracing::warn!(%reason, "dead-lettering a message that is not a job message");
                self.counters.count(&ProcessOutcome::Failed { error: reason.clone() });
                return Err(Box::new(AbortError::new(format!("malformed job message: {reason}"))));
            }
        };
        match self.process_one(task_id).await {
            Ok(ProcessOutcome::Succeeded | ProcessOutcome::Skipped | ProcessOutcome::ClaimLost) => Ok(()),
            Ok(ProcessOutcome::Failed { error }) => Err(Box::new(AbortError::new(error))),
            Ok(ProcessOutcome::RetryLater { error }) => Err(error.into()),
            Err(error) => {
                tracing::warn!(%task_id, error = %format!("{error:#}"), "cannot process task; will retry");
                Err(Box::new(error))
            }
        }
    }

    /// Consumes the queue until `shutdown` is cancelled: stops taking deliveries at once,
    /// lets in-flight tasks finish for up to `shutdown_grace`, then abandons the rest (they
    /// stay claimed, go stale, and another worker resumes them). A broker or database
    /// failure restarts the consumer with backoff; it never ends the loop.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.handlers.is_empty() {
            // Still consume: a task nobody can run must end `failed` with a clear error (and
            // in the dead-letter queue), not wait unseen in the queue.
            tracing::warn!(worker = %self.identity, "no task handlers registered: every task will fail as of an unknown kind");
        }
        tracing::info!(
            worker = %self.identity,
            queue = self.queue.queue_name(),
            concurrency = self.concurrency,
            kinds = ?self.handlers.keys().collect::<Vec<_>>(),
            "job runner starting"
        );
        let mut backoff = aos_bus::Backoff::default();
        while !shutdown.is_cancelled() {
            // A fresh apalis worker name per start: apalis-sqlite refuses a name whose
            // previous holder was seen alive within a heartbeat.
            let worker_name = format!("{}#{}", self.identity, &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let started = Instant::now();
            let result = match &self.queue.backend {
                QueueBackend::Amqp(queue) => self.run_amqp_worker(queue, &worker_name, &shutdown).await,
                QueueBackend::Sqlite(queue) => self.run_sqlite_worker(queue, &worker_name, &shutdown).await,
            };
            if shutdown.is_cancelled() {
                if let Err(error) = result {
                    tracing::warn!(error = %format!("{error:#}"), "job worker failed while stopping");
                }
                break;
            }
            match result {
                Ok(()) => tracing::warn!(worker = %worker_name, "job worker ended by itself; restarting"),
                Err(error) => {
                    tracing::warn!(worker = %worker_name, error = %format!("{error:#}"), "job worker failed; restarting")
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff = aos_bus::Backoff::default();
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        tracing::info!(worker = %self.identity, counters = ?self.counters(), "job runner stopped");
        Ok(())
    }

    async fn run_amqp_worker(
        &self,
        queue: &AmqpQueue,
        worker_name: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let prefetch = u16::try_from(self.concurrency).unwrap_or(u16::MAX);
        let (backend, pool) = queue.consumer_backend(worker_name, prefetch).await?;
        let (backend, close) = CloseFirst::new(backend.with_codec(TolerantJsonCodec));
        let context = WorkerContext::new(worker_name);
        let worker = WorkerBuilder::new(&context)
            .backend(backend)
            .concurrency(self.concurrency)
            .retry(self.retry_policy())
            .build(self.service());
        let result = drive(worker.run(), &context, &close, shutdown, self.settings.shutdown_grace).await;
        // Closing the connection returns deliveries this worker prefetched but never
        // started to the queue at once.
        pool.close();
        Ok(result?)
    }

    async fn run_sqlite_worker(
        &self,
        queue: &SqliteQueue,
        worker_name: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (backend, close) = CloseFirst::new(
            queue
                .storage(self.concurrency)
                .with_codec(TolerantJsonCodec)
                .poll_with_interval(self.settings.sqlite_poll_interval),
        );
        let context = WorkerContext::new(worker_name);
        let worker = WorkerBuilder::new(&context)
            .backend(backend)
            .concurrency(self.concurrency)
            .retry(self.retry_policy())
            .build(self.service());
        Ok(drive(worker.run(), &context, &close, shutdown, self.settings.shutdown_grace).await?)
    }

    /// apalis' in-process retries: as many as the attempt budget (the row decides when to
    /// stop, by failing the task), after a doubling delay.
    fn retry_policy(&self) -> BackoffRetryPolicy<DoublingBackoff> {
        let first = self.settings.retry_backoff.max(Duration::from_millis(1));
        let backoff = DoublingBackoff { next: first, max: self.settings.retry_backoff_max.max(first) };
        RetryPolicy::retries(self.settings.max_attempts.max(1) as usize).with_backoff(backoff)
    }

    /// The apalis service: one delivery in, apalis' result out.
    fn service(
        &self,
    ) -> impl Fn(Inbound) -> BoxFuture<'static, Result<(), BoxDynError>> + Clone + Send + Sync + 'static {
        let runner = self.clone();
        move |inbound: Inbound| {
            let runner = runner.clone();
            async move { runner.handle_delivery(inbound).await }.boxed()
        }
    }
}

/// The delay before each in-process retry of one delivery: `next`, doubling up to `max`.
/// (tower's `ExponentialBackoff` would do, but its constructor is fallible for inputs we
/// never pass; this cannot fail.) apalis clones the policy per delivery, so each delivery
/// starts from the first delay.
#[derive(Clone, Debug)]
struct DoublingBackoff {
    next: Duration,
    max: Duration,
}

impl DoublingBackoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

impl Backoff for DoublingBackoff {
    type Future = tokio::time::Sleep;

    fn next_backoff(&mut self) -> Self::Future {
        tokio::time::sleep(self.next_delay())
    }
}

/// Refreshes the heartbeat every `interval` until the claim is found lost, then returns.
/// A database error is logged and retried at the next tick: the handler's own writes will
/// fail too, and if the outage outlasts `stale_after` the task is resumed elsewhere.
async fn keep_claim_alive(db: &DatabaseConnection, claim: &Claim, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the claim itself was the first beat
    loop {
        ticker.tick().await;
        match store::heartbeat(db, claim, Utc::now()).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "cannot refresh the task heartbeat"),
        }
    }
}

/// Prometheus metrics of one run of a task on this worker (exported by its `/metrics`):
/// `aos_task_runs_total{kind,outcome}` and `aos_task_run_duration_seconds{kind,outcome}`
/// (outcome: `succeeded`, `failed`, `retry`, `claim_lost`).
fn record_run_metrics(kind: String, outcome: &ProcessOutcome, took: std::time::Duration) {
    let outcome = match outcome {
        ProcessOutcome::Succeeded => "succeeded",
        ProcessOutcome::Failed { .. } => "failed",
        ProcessOutcome::RetryLater { .. } => "retry",
        ProcessOutcome::Skipped => "skipped",
        ProcessOutcome::ClaimLost => "claim_lost",
    };
    metrics::histogram!("aos_task_run_duration_seconds", "kind" => kind.clone(), "outcome" => outcome)
        .record(took.as_secs_f64());
    metrics::counter!("aos_task_runs_total", "kind" => kind, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_up_to_its_maximum() {
        let mut backoff = DoublingBackoff { next: Duration::from_secs(1), max: Duration::from_secs(5) };
        let delays: Vec<u64> = (0..5).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
    }
}
