//! The embedded job queue: apalis-sqlite's `Jobs` table in the same SQLite database as the
//! tasks, on the same sqlx pool (sea-orm 2 and apalis-sqlite 1.0 both use sqlx 0.9).
//!
//! apalis-sqlite's setup (`SqliteStorage::setup`) runs its migrations and also sets
//! pragmas for speed, among them `PRAGMA synchronous = OFF`, which lets a power loss
//! lose committed transactions (tasks included, as they live in the same file). Pragmas
//! like that one are per connection, so we run the setup on a separate one-connection pool
//! to the same database, set `synchronous` back to `FULL` on it before closing it, and the
//! shared pool's connections keep what `aos_db::connect` gave them (`FULL`).

use std::time::Duration;

use apalis::prelude::TaskBuilder;
use apalis_sqlite::{SqlitePool, SqlitePoolOptions, SqliteStorage};
use sea_orm::{DatabaseConnection, DbBackend};

use crate::queue::DeadLetter;
use crate::{Inbound, JobMessage, JobsError, TaskId};

/// apalis' job type (its queue name) for our jobs. One per database: a single-node
/// install has one suite.
const JOB_TYPE: &str = "aos.jobs";

/// Two daemons starting together may run the setup at once; apalis' migrations are not
/// all idempotent, so the loser retries and then finds them applied.
const SETUP_ATTEMPTS: u32 = 3;
const SETUP_RETRY_DELAY: Duration = Duration::from_millis(500);

pub(crate) struct SqliteQueue {
    pool: SqlitePool,
}

impl SqliteQueue {
    pub(crate) async fn open(db: &DatabaseConnection) -> Result<Self, JobsError> {
        if db.get_database_backend() != DbBackend::Sqlite {
            return Err(JobsError::Invalid(
                "the SQLite job queue needs a SQLite database; with MySQL/MariaDB use RabbitMQ".to_owned(),
            ));
        }
        let pool = db.get_sqlite_connection_pool().clone();
        let mut attempt = 1;
        loop {
            match setup_on_a_separate_connection(&pool).await {
                Ok(()) => break,
                Err(error) if attempt < SETUP_ATTEMPTS => {
                    tracing::debug!(%error, attempt, "apalis-sqlite setup failed; retrying");
                    tokio::time::sleep(SETUP_RETRY_DELAY).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(SqliteQueue { pool })
    }

    pub(crate) fn queue_name(&self) -> &str {
        JOB_TYPE
    }

    pub(crate) async fn publish(&self, task_id: TaskId) -> Result<(), JobsError> {
        let job = TaskBuilder::new(JobMessage::new(task_id).to_bytes()).build();
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| JobsError::queue(format!("cannot publish task {task_id}"), error))?;
        apalis_sqlite::queries::push_tasks(&mut *connection, JOB_TYPE, &[job])
            .await
            .map_err(|error| JobsError::queue(format!("cannot publish task {task_id}"), error))
    }

    /// The storage a worker consumes from; the runner adds the codec and poll interval.
    /// `batch_size` is how many jobs one fetch locks (the runner's concurrency).
    pub(crate) fn storage(&self, batch_size: usize) -> SqliteStorage<Inbound> {
        let config = apalis_sqlite::Config::default()
            .queue(JOB_TYPE)
            .batch_size(batch_size.max(1))
            // apalis-sqlite counts heartbeats in whole seconds (a sub-second interval would
            // make every job of every other worker look orphaned); its re-enqueueing of a
            // dead worker's jobs is a second safety net next to our sweep.
            .heartbeat_interval(Duration::from_secs(5))
            .missed_heartbeats(3);
        SqliteStorage::new(&self.pool).with_config(config)
    }

    pub(crate) async fn depth(&self) -> Result<u64, JobsError> {
        // What apalis-sqlite may still hand to a worker (see its fetch_next query).
        let (count,): (i64,) = sea_orm::sqlx::query_as(
            "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND \
             (status IN ('Pending', 'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))",
        )
        .bind(JOB_TYPE)
        .fetch_one(&self.pool)
        .await
        .map_err(|error| JobsError::queue("cannot count the jobs", error))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub(crate) async fn pop_dead_letter(&self) -> Result<Option<DeadLetter>, JobsError> {
        let body: Option<(Vec<u8>,)> = sea_orm::sqlx::query_as(
            "DELETE FROM Jobs WHERE id = \
             (SELECT id FROM Jobs WHERE job_type = ?1 AND status = 'Killed' ORDER BY done_at, id LIMIT 1) \
             RETURNING job",
        )
        .bind(JOB_TYPE)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| JobsError::queue("cannot take a dead letter", error))?;
        Ok(body.map(|(body,)| DeadLetter::from_body(body)))
    }

    pub(crate) async fn delete_jobs(&self) -> Result<(), JobsError> {
        sea_orm::sqlx::query("DELETE FROM Jobs WHERE job_type = ?1")
            .bind(JOB_TYPE)
            .execute(&self.pool)
            .await
            .map_err(|error| JobsError::queue("cannot delete the jobs", error))?;
        Ok(())
    }
}

/// See the module header: apalis' setup on a throw-away connection to the same database.
async fn setup_on_a_separate_connection(pool: &SqlitePool) -> Result<(), JobsError> {
    let options = (*pool.connect_options()).clone();
    let setup_pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|error| JobsError::queue("cannot open a connection for the queue setup", error))?;
    let result = async {
        SqliteStorage::setup(&setup_pool)
            .await
            .map_err(|error| JobsError::queue("apalis-sqlite setup failed", error))?;
        // The pragma dies with this connection anyway; restoring it keeps the rule simple
        // to check ("nothing we leave open runs with synchronous = OFF").
        sea_orm::sqlx::query("PRAGMA synchronous = FULL")
            .execute(&setup_pool)
            .await
            .map_err(|error| JobsError::queue("cannot restore PRAGMA synchronous", error))?;
        Ok(())
    }
    .await;
    setup_pool.close().await;
    result
}
