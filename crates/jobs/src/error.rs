//! The error type of the jobs layer's own operations (recording, publishing, sweeping).
//! What a task handler returns is a different thing: [`crate::TaskError`].

use aos_db::DbError;

use crate::TaskId;

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A statement on `tasks`/`task_steps` failed, or the sweep's lease was lost
    /// ([`DbError::LeaseLost`]).
    #[error(transparent)]
    Database(#[from] DbError),

    /// RabbitMQ could not be reached or refused an operation. The URI in `context` is
    /// masked.
    #[error("rabbitmq: {context}")]
    Broker {
        context: String,
        #[source]
        source: aos_bus::lapin::Error,
    },

    /// The broker did not take responsibility for a message: it nacked it, or returned it
    /// as unroutable (the queue does not exist).
    #[error("rabbitmq did not accept the message for task {task_id}: {reason}")]
    PublishRejected { task_id: TaskId, reason: String },

    /// The queue machinery failed: apalis-sqlite's `Jobs` table, or setting up apalis-amqp's
    /// consumer.
    #[error("job queue: {context}")]
    Queue {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A caller or the stored data broke a rule of this layer (the SQLite queue on a MySQL
    /// database, an empty queue prefix, a task id that is not a UUID).
    #[error("{0}")]
    Invalid(String),
}

impl From<sea_orm::DbErr> for JobsError {
    fn from(error: sea_orm::DbErr) -> Self {
        JobsError::Database(DbError::Query(error))
    }
}

impl JobsError {
    pub(crate) fn broker(context: impl Into<String>, source: aos_bus::lapin::Error) -> Self {
        JobsError::Broker { context: context.into(), source }
    }

    pub(crate) fn queue(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        JobsError::Queue { context: context.into(), source: source.into() }
    }

    /// True when the error says the sweep's lease changed hands.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, JobsError::Database(DbError::LeaseLost { .. }))
    }
}
