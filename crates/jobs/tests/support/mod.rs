//! The harness of the jobs conformance suite: a fresh database and a fresh queue per test,
//! on both implementations, and [`job_queue_test_suite!`] generating one `#[tokio::test]`
//! per backend for each listed test function (after quickwit's `metastore_test_suite!`).
//!
//! RabbitMQ runs with MariaDB (the production pairing), on the broker named by
//! `AOS_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), with queues
//! `aos-test-<random>.jobs` and `.jobs.dead` deleted at the end. SQLite runs on a fresh
//! SQLite file. Waiting is real but bounded: [`wait_until`] polls a condition until a
//! deadline, so a slow machine makes a test slower, not flaky.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use aos_db::entity::{TaskState, task, task_step};
use aos_db::testing::TestDatabase;
use aos_jobs::{JobQueue, JobRunner, RunnerSettings, TaskId};
use chrono::Utc;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const AMQP_URL_ENV: &str = "AOS_TEST_AMQP_URL";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Every wait in the suite gives up after this long.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    RabbitMq,
    Sqlite,
}

/// What a test gets: the database, a queue handle, and ways to make more of both.
#[derive(Clone)]
pub struct Env {
    pub backend: Backend,
    pub db: DatabaseConnection,
    pub queue: JobQueue,
    amqp_url: String,
    prefix: String,
}

/// Timings short enough for tests: a heartbeat goes stale after 1.5 s.
pub fn test_settings() -> RunnerSettings {
    RunnerSettings {
        heartbeat_interval: Duration::from_millis(200),
        stale_after: Duration::from_millis(1500),
        max_attempts: 3,
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(10),
        sqlite_poll_interval: Duration::from_millis(100),
    }
}

impl Env {
    /// A second, independent handle on the same queue (its own connections), as another
    /// worker process would have.
    pub async fn another_queue(&self) -> anyhow::Result<JobQueue> {
        Ok(match self.backend {
            Backend::RabbitMq => JobQueue::connect_amqp(&self.amqp_url, &self.prefix).await?,
            Backend::Sqlite => JobQueue::sqlite(&self.db).await?,
        })
    }

    pub fn runner(&self, queue: &JobQueue, identity: &str) -> JobRunner {
        JobRunner::new(self.db.clone(), queue.clone(), identity, 2).with_settings(test_settings())
    }

    /// The beat lease's generation, for the sweep.
    pub async fn beat_lease(&self) -> anyhow::Result<i64> {
        match aos_db::lease_acquire_or_renew(&self.db, "beat", "test-beat", Duration::from_secs(600), Utc::now())
            .await?
        {
            aos_db::LeaseState::Held { generation, .. } => Ok(generation),
            other => bail!("the test could not take the beat lease: {other:?}"),
        }
    }

    pub async fn task(&self, task_id: TaskId) -> anyhow::Result<task::Model> {
        task::Entity::find_by_id(task_id.to_string()).one(&self.db).await?.context("task row not found")
    }

    pub async fn steps(&self, task_id: TaskId) -> anyhow::Result<Vec<task_step::Model>> {
        Ok(task_step::Entity::find()
            .filter(task_step::Column::TaskId.eq(task_id.to_string()))
            .order_by_asc(task_step::Column::Seq)
            .all(&self.db)
            .await?)
    }

    /// Waits until the task is in `state` (and fails early if it reaches another final state).
    pub async fn wait_for_state(&self, task_id: TaskId, state: TaskState) -> anyhow::Result<task::Model> {
        wait_until(&format!("task {task_id} {state}"), || async {
            let row = self.task(task_id).await?;
            if row.state == state {
                return Ok(Some(row));
            }
            if row.state.is_final() {
                bail!("task {task_id} ended {} (error {:?}) instead of {state}", row.state, row.error);
            }
            Ok(None)
        })
        .await
    }

    /// Publishes a raw body on the queue, bypassing [`JobQueue::publish`] (to deliver what
    /// our publisher never would).
    pub async fn publish_raw(&self, body: &[u8]) -> anyhow::Result<()> {
        match self.backend {
            Backend::RabbitMq => {
                use aos_bus::lapin::BasicProperties;
                use aos_bus::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
                let connection = aos_bus::connect(&self.amqp_url, "aos-jobs test").await?;
                let channel = connection.create_channel().await?;
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                channel
                    .basic_publish(
                        "".into(),
                        self.queue.queue_name().into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default(),
                    )
                    .await?
                    .await?;
                connection.close(200, "done".into()).await?;
            }
            Backend::Sqlite => {
                let job = apalis::prelude::TaskBuilder::new(body.to_vec()).build();
                let mut connection = self.db.get_sqlite_connection_pool().acquire().await?;
                apalis_sqlite::queries::push_tasks(&mut *connection, self.queue.queue_name(), &[job]).await?;
            }
        }
        Ok(())
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most [`PATIENCE`].
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("gave up waiting for {what} after {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within_patience<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(PATIENCE, future)
        .await
        .with_context(|| format!("gave up waiting for {what} after {PATIENCE:?}"))
}

/// A runner running in the background until [`Running::stop`].
pub struct Running {
    pub runner: JobRunner,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn start(runner: JobRunner) -> Self {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn({
            let runner = runner.clone();
            let shutdown = shutdown.clone();
            async move { runner.run(shutdown).await }
        });
        Running { runner, shutdown, handle }
    }

    /// Cancels the runner and waits for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        within_patience("the runner to stop", self.handle).await???;
        Ok(())
    }
}

/// Counts calls; shared between a test and its handlers.
#[derive(Clone, Default)]
pub struct CallCounter(Arc<AtomicUsize>);

impl CallCounter {
    /// Counts a call and returns its number (1 for the first).
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs one conformance test on a fresh database and queue of `backend`, cleans up, then
/// fails if the test failed.
pub async fn run_conformance_test<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // rustls has two providers in this dependency graph (see FACTS: lapin's default pulls
    // aws-lc-rs); pick one as the daemons do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (env, database) = setup(backend).await.unwrap_or_else(|error| panic!("cannot set up {backend:?}: {error:#}"));
    let outcome = test(env.clone()).await;
    if env.backend == Backend::RabbitMq
        && let Err(error) = env.queue.delete().await
    {
        eprintln!("cannot delete the test queues of {}: {error:#}", env.prefix);
    }
    env.queue.close().await;
    let _ = env.db.close().await;
    database.cleanup().await;
    if let Err(error) = outcome {
        panic!("test failed on {backend:?}: {error:#}");
    }
}

async fn setup(backend: Backend) -> anyhow::Result<(Env, TestDatabase)> {
    let amqp_url = std::env::var(AMQP_URL_ENV).unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let prefix = format!("aos-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let database = match backend {
        Backend::RabbitMq => TestDatabase::mysql().await?,
        Backend::Sqlite => TestDatabase::sqlite().await?,
    };
    let db = database.connect_migrated().await?;
    let queue = match backend {
        Backend::RabbitMq => JobQueue::connect_amqp(&amqp_url, &prefix).await?,
        Backend::Sqlite => JobQueue::sqlite(&db).await?,
    };
    Ok((Env { backend, db, queue, amqp_url, prefix }, database))
}

/// Generates, for each listed `async fn test(env: Env) -> anyhow::Result<()>`, a test in
/// `mod rabbitmq` and one in `mod sqlite`.
#[macro_export]
macro_rules! job_queue_test_suite {
    ($($test:ident),+ $(,)?) => {
        mod rabbitmq {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::support::run_conformance_test($crate::support::Backend::RabbitMq, super::$test).await;
                }
            )+
        }

        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::support::run_conformance_test($crate::support::Backend::Sqlite, super::$test).await;
                }
            )+
        }
    };
}
