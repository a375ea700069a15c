//! Driving one apalis worker, and stopping it so that its in-flight tasks can finish.
//!
//! apalis 1.0 stops a worker like this (apalis-core `worker/call_all.rs`): after
//! `WorkerContext::stop` it only polls the in-flight tasks, and calls the backend again
//! (`poll_close`) once the last of them is done. Whatever the backend had in progress at that
//! moment stays parked until then. apalis-sqlite's backend works in write transactions in
//! the same SQLite database as our tasks: it marks each job it hands out as running (a
//! "lock" transaction, right after the task starts), records outcomes, fetches jobs and
//! beats its heartbeat. A transaction parked after its first write keeps SQLite's write
//! lock, so the in-flight tasks, which must write their own rows (heartbeat, steps, outcome),
//! wait on a lock that is released only after they finish: a deadlock that only the shutdown
//! grace ends, with the tasks abandoned. (Observed: a task stopped right after it started
//! never refreshed its heartbeat and was left `running` once the grace ran out.)
//!
//! [`CloseFirst`] reverses the order: when shutdown is requested, the worker's next poll of
//! the backend closes the backend first (apalis' `poll_close`: in-progress bookkeeping is
//! completed, an in-progress fetch is rolled back, jobs fetched but not started are handed
//! back) and only then stops the worker. The worker then waits for its in-flight tasks with
//! nothing of the backend's pending, and closes the backend again at the end, which records
//! the outcomes of the tasks that finished meanwhile. With RabbitMQ, whose backend holds
//! nothing the tasks need and closes at once, this changes nothing.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use apalis::prelude::{Backend, WorkerContext, WorkerError};
use apalis_core::backend::{BackendConfig, WireFormatBackend};
use futures::task::AtomicWaker;
use tokio_util::sync::CancellationToken;

/// Drives an apalis worker until it ends by itself (then the caller restarts it) or
/// `shutdown` fires; then closes its intake through `close` (see the module header) and
/// gives its in-flight tasks `grace` to finish before dropping them.
///
/// Not apalis' `run_until`: it joins the worker with the stop signal, so a worker that
/// ends by itself (its consumer stream closed with the connection) would wait for the
/// signal instead of being restarted.
pub(crate) async fn drive(
    worker: impl Future<Output = Result<(), WorkerError>>,
    context: &WorkerContext,
    close: &CloseSignal,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Result<(), WorkerError> {
    let mut worker = pin!(worker);
    tokio::select! {
        result = &mut worker => return result,
        () = shutdown.cancelled() => {}
    }
    if context.is_pending() {
        // Never started: nothing is in flight.
        return Ok(());
    }
    // The worker closes its backend and stops itself at its next poll, just below.
    close.close();
    match tokio::time::timeout(grace, &mut worker).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?grace,
                "in-flight tasks did not finish within the shutdown grace; abandoning them to be resumed elsewhere"
            );
            Ok(())
        }
    }
}

/// Asks a [`CloseFirst`] backend to close and stop its worker. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct CloseSignal(Arc<SignalState>);

#[derive(Debug, Default)]
struct SignalState {
    requested: AtomicBool,
    /// The worker's task, woken when closing is requested.
    waker: AtomicWaker,
}

impl CloseSignal {
    pub(crate) fn close(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
        self.0.waker.wake();
    }

    /// Whether closing was requested; registers the worker to be woken when it is.
    fn requested(&self, cx: &Context<'_>) -> bool {
        self.0.waker.register(cx.waker());
        self.0.requested.load(Ordering::SeqCst)
    }
}

/// A backend that, once its [`CloseSignal`] fires, closes itself and then stops its worker
/// (see the module header).
#[derive(Debug)]
pub(crate) struct CloseFirst<B: Backend> {
    inner: B,
    signal: CloseSignal,
    phase: Phase<B::Error>,
}

#[derive(Debug)]
enum Phase<E> {
    Open,
    Closing,
    Closed,
    /// Closing failed; the inner backend is not polled again (its state is undefined after
    /// an error). The error is returned by the worker's final `poll_close`.
    Failed(Option<E>),
}

impl<B: Backend> CloseFirst<B> {
    pub(crate) fn new(inner: B) -> (Self, CloseSignal) {
        let signal = CloseSignal::default();
        (CloseFirst { inner, signal: signal.clone(), phase: Phase::Open }, signal)
    }
}

impl<B: Backend> Backend for CloseFirst<B> {
    type Task = B::Task;
    type Error = B::Error;

    /// apalis calls this first in every round while the worker runs, so this is where the
    /// closing happens; until the worker is stopped, it returns `Pending`, which keeps
    /// apalis from taking more tasks while it still polls the in-flight ones.
    fn poll_ready(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        if let Phase::Open = self.phase {
            if !self.signal.requested(cx) {
                return self.inner.poll_ready(cx, worker);
            }
            self.phase = Phase::Closing;
        }
        if let Phase::Closing = self.phase {
            self.phase = match ready!(self.inner.poll_close(cx, worker)) {
                Ok(()) => Phase::Closed,
                Err(error) => Phase::Failed(Some(error)),
            };
        }
        // Stopping wakes the worker, which from now on polls only its in-flight tasks, and
        // then `poll_close`.
        if !worker.is_shutting_down()
            && let Err(error) = worker.stop()
        {
            tracing::warn!(%error, "cannot stop the job worker");
        }
        Poll::Pending
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        if !matches!(self.phase, Phase::Open) || self.signal.requested(cx) {
            return Poll::Pending;
        }
        self.inner.poll_next(cx, worker)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        match &mut self.phase {
            Phase::Failed(error) => Poll::Ready(error.take().map_or(Ok(()), Err)),
            Phase::Open | Phase::Closing | Phase::Closed => self.inner.poll_close(cx, worker),
        }
    }
}

impl<B: Backend + BackendConfig> BackendConfig for CloseFirst<B> {
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        self.inner.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.inner.middleware(worker)
    }
}

impl<B: Backend + WireFormatBackend> WireFormatBackend for CloseFirst<B> {
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        self.inner.codec()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use apalis::prelude::{BoxDynError, TaskBuilder, WorkerBuilder};
    use apalis_core::backend::dequeue::VecDequeBackend;
    use futures::future::BoxFuture;
    use futures::{FutureExt, SinkExt};
    use tokio::sync::{Mutex, Notify};

    use super::*;

    /// What apalis-sqlite does, reduced to the part that matters: after handing out a task,
    /// the backend does some bookkeeping for it in `poll_ready` (there: marking the job
    /// running), holding a resource the task also needs (there: SQLite's write lock) until
    /// the bookkeeping is polled to its end (there: its commit); `poll_close` finishes it too.
    struct BookkeepingBackend {
        inner: VecDequeBackend<u32>,
        database: Arc<Mutex<()>>,
        bookkeeping_holds_the_database: Arc<Notify>,
        commit: Arc<Notify>,
        handed_out: bool,
        bookkeeping: Option<BoxFuture<'static, ()>>,
        bookkeeping_done: bool,
    }

    impl BookkeepingBackend {
        fn poll_bookkeeping(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            if self.handed_out && !self.bookkeeping_done && self.bookkeeping.is_none() {
                let (database, holds, commit) =
                    (self.database.clone(), self.bookkeeping_holds_the_database.clone(), self.commit.clone());
                self.bookkeeping = Some(
                    async move {
                        let _lock = database.lock_owned().await;
                        holds.notify_one();
                        commit.notified().await;
                    }
                    .boxed(),
                );
            }
            if let Some(bookkeeping) = &mut self.bookkeeping {
                ready!(bookkeeping.poll_unpin(cx));
                self.bookkeeping = None;
                self.bookkeeping_done = true;
            }
            Poll::Ready(())
        }
    }

    impl Backend for BookkeepingBackend {
        type Task = <VecDequeBackend<u32> as Backend>::Task;
        type Error = <VecDequeBackend<u32> as Backend>::Error;

        fn poll_ready(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
            ready!(self.poll_bookkeeping(cx));
            self.inner.poll_ready(cx, worker)
        }

        fn poll_next(
            &mut self,
            cx: &mut Context<'_>,
            worker: &WorkerContext,
        ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
            let next = self.inner.poll_next(cx, worker);
            if let Poll::Ready(Some(Ok(_))) = &next {
                self.handed_out = true;
            }
            next
        }

        fn poll_close(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
            ready!(self.poll_bookkeeping(cx));
            self.inner.poll_close(cx, worker)
        }
    }

    impl BackendConfig for BookkeepingBackend {
        type Args = u32;
        type Id = <VecDequeBackend<u32> as BackendConfig>::Id;
        type Kind = <VecDequeBackend<u32> as BackendConfig>::Kind;
        type Config = <VecDequeBackend<u32> as BackendConfig>::Config;
        type Layer = <VecDequeBackend<u32> as BackendConfig>::Layer;

        fn config(&self) -> &Self::Config {
            self.inner.config()
        }

        fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
            self.inner.middleware(worker)
        }
    }

    #[tokio::test]
    async fn stopping_closes_the_backend_first_so_that_an_in_flight_task_can_finish() -> anyhow::Result<()> {
        let database = Arc::new(Mutex::new(()));
        let (task_started, release_task, finished) =
            (Arc::new(Notify::new()), Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let (bookkeeping_holds_the_database, commit) = (Arc::new(Notify::new()), Arc::new(Notify::new()));

        let mut queue = VecDequeBackend::new();
        queue.send(TaskBuilder::new(1_u32).build()).await?;
        let (backend, close) = CloseFirst::new(BookkeepingBackend {
            inner: queue,
            database: database.clone(),
            bookkeeping_holds_the_database: bookkeeping_holds_the_database.clone(),
            commit: commit.clone(),
            handed_out: false,
            bookkeeping: None,
            bookkeeping_done: false,
        });
        let task = {
            let (database, task_started, release_task, finished) =
                (database.clone(), task_started.clone(), release_task.clone(), finished.clone());
            move |_: u32| -> BoxFuture<'static, Result<(), BoxDynError>> {
                let (database, task_started, release_task, finished) =
                    (database.clone(), task_started.clone(), release_task.clone(), finished.clone());
                async move {
                    task_started.notify_one();
                    release_task.notified().await;
                    // Recording the outcome needs the database.
                    let _lock = database.lock().await;
                    finished.store(true, Ordering::SeqCst);
                    Ok(())
                }
                .boxed()
            }
        };
        let context = WorkerContext::new("drive-test");
        let worker = WorkerBuilder::new(&context).backend(backend).build(task);
        let shutdown = CancellationToken::new();
        let driving = drive(worker.run(), &context, &close, &shutdown, Duration::from_secs(30));
        let stopping = async {
            task_started.notified().await;
            bookkeeping_holds_the_database.notified().await;
            // Shut down while the backend's bookkeeping holds the database, then let the
            // task go on (it now waits for the database) and the bookkeeping commit (which
            // it can only do if the backend is polled).
            shutdown.cancel();
            release_task.notify_one();
            commit.notify_one();
        };
        let (driven, ()) =
            tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(driving, stopping) }).await?;
        driven?;
        anyhow::ensure!(finished.load(Ordering::SeqCst), "the in-flight task was abandoned");
        Ok(())
    }
}
