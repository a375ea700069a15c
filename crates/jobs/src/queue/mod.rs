//! The queue that carries [`JobMessage`]s from whoever enqueues to the workers, in its two
//! implementations: RabbitMQ ([`amqp`], production, with MySQL/MariaDB) and apalis-sqlite
//! ([`sqlite`], the embedded single-node default, in the same SQLite database as the
//! tasks). [`JobQueue`] is the one handle the rest of the suite holds; which
//! implementation is behind it is decided once, at start-up, from the configuration.
//!
//! A queue only delivers; it decides nothing. A message that is lost, duplicated or late
//! is repaired by the `tasks` table (the claim deduplicates, the sweep republishes).

pub(crate) mod amqp;
pub(crate) mod sqlite;

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{JobMessage, JobsError, TaskId};

/// A handle on the job queue. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct JobQueue {
    pub(crate) backend: QueueBackend,
}

#[derive(Clone)]
pub(crate) enum QueueBackend {
    Amqp(Arc<amqp::AmqpQueue>),
    Sqlite(Arc<sqlite::SqliteQueue>),
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            QueueBackend::Amqp(queue) => f.debug_struct("JobQueue::Amqp").field("queue", &queue.queue_name()).finish(),
            QueueBackend::Sqlite(queue) => {
                f.debug_struct("JobQueue::Sqlite").field("queue", &queue.queue_name()).finish()
            }
        }
    }
}

impl JobQueue {
    /// The RabbitMQ queue `<queue_prefix>.jobs` on the broker at `amqp_uri`, with its
    /// dead-letter queue `<queue_prefix>.jobs.dead`. Connects the publisher (a channel in
    /// confirm mode) and declares both queues; fails if the broker cannot be reached or
    /// the queues exist with other arguments. Later broker outages are survived: the
    /// publisher reconnects at the next publish, the runner re-declares and reconnects.
    pub async fn connect_amqp(amqp_uri: &str, queue_prefix: &str) -> Result<JobQueue, JobsError> {
        let queue = amqp::AmqpQueue::connect(amqp_uri, queue_prefix).await?;
        Ok(JobQueue { backend: QueueBackend::Amqp(Arc::new(queue)) })
    }

    /// The queue a daemon uses: apalis-sqlite when the database is SQLite (the embedded
    /// single-node setup needs no broker), otherwise RabbitMQ at `amqp_uri`. Retries with
    /// backoff until it works or `shutdown` is cancelled (then `None`); `on_failure` sees each
    /// failed attempt (readiness reporting).
    pub async fn open_with_backoff(
        db: &DatabaseConnection,
        amqp_uri: &str,
        queue_prefix: &str,
        shutdown: &tokio_util::sync::CancellationToken,
        mut on_failure: impl FnMut(&JobsError),
    ) -> Option<JobQueue> {
        let mut backoff = aos_bus::Backoff::default();
        loop {
            let opened = if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
                JobQueue::sqlite(db).await
            } else {
                JobQueue::connect_amqp(amqp_uri, queue_prefix).await
            };
            match opened {
                Ok(queue) => return Some(queue),
                Err(error) => on_failure(&error),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// The apalis-sqlite queue in the same SQLite database as `db`, sharing its pool.
    /// Creates apalis' tables if needed. Fails on a database that is not SQLite (with
    /// MySQL/MariaDB the queue is RabbitMQ).
    pub async fn sqlite(db: &DatabaseConnection) -> Result<JobQueue, JobsError> {
        let queue = sqlite::SqliteQueue::open(db).await?;
        Ok(JobQueue { backend: QueueBackend::Sqlite(Arc::new(queue)) })
    }

    /// Publishes the message for `task_id`. On RabbitMQ, `Ok` means the broker confirmed
    /// it has the message (persistent, routed to the queue).
    pub async fn publish(&self, task_id: TaskId) -> Result<(), JobsError> {
        match &self.backend {
            QueueBackend::Amqp(queue) => queue.publish(task_id).await,
            QueueBackend::Sqlite(queue) => queue.publish(task_id).await,
        }
    }

    /// The queue's name (`<prefix>.jobs` on RabbitMQ; apalis' job type on SQLite).
    pub fn queue_name(&self) -> &str {
        match &self.backend {
            QueueBackend::Amqp(queue) => queue.queue_name(),
            QueueBackend::Sqlite(queue) => queue.queue_name(),
        }
    }

    /// How many messages wait for a worker: on RabbitMQ the queue's ready messages (not
    /// those delivered and not yet acknowledged), on SQLite the jobs not finished. For
    /// metrics and tests.
    pub async fn depth(&self) -> Result<u64, JobsError> {
        match &self.backend {
            QueueBackend::Amqp(queue) => queue.depth().await,
            QueueBackend::Sqlite(queue) => queue.depth().await,
        }
    }

    /// Takes (removes) the oldest dead letter: the message of a task that ended `failed`
    /// (or of a malformed delivery, as [`DeadLetter::Malformed`]), or `None` if there is
    /// none. On RabbitMQ these sit in `<queue>.dead`; on SQLite they are apalis' `Killed`
    /// jobs. For operators inspecting failures, and for tests.
    pub async fn pop_dead_letter(&self) -> Result<Option<DeadLetter>, JobsError> {
        match &self.backend {
            QueueBackend::Amqp(queue) => queue.pop_dead_letter().await,
            QueueBackend::Sqlite(queue) => queue.pop_dead_letter().await,
        }
    }

    /// Deletes the queue and its dead-letter queue (RabbitMQ), or every job of this queue
    /// (SQLite). For tests and decommissioning; running workers lose their consumer.
    pub async fn delete(&self) -> Result<(), JobsError> {
        match &self.backend {
            QueueBackend::Amqp(queue) => queue.delete_queues().await,
            QueueBackend::Sqlite(queue) => queue.delete_jobs().await,
        }
    }

    /// Closes the publisher's connection (RabbitMQ; nothing to do on SQLite, whose pool
    /// belongs to the caller). A later publish reconnects.
    pub async fn close(&self) {
        if let QueueBackend::Amqp(queue) = &self.backend {
            queue.close().await;
        }
    }
}

/// A message found in the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetter {
    Job(JobMessage),
    /// A body that is not a [`JobMessage`], kept verbatim.
    Malformed(Vec<u8>),
}

impl DeadLetter {
    fn from_body(body: Vec<u8>) -> Self {
        match serde_json::from_slice::<JobMessage>(&body) {
            Ok(message) => DeadLetter::Job(message),
            Err(_) => DeadLetter::Malformed(body),
        }
    }
}
