//! The one error type of the database layer.
//!
//! Callers tell the cases apart (a lost lease is not a broken database); messages never
//! carry a password: connection URLs are masked before they enter an error. Each variant's
//! message describes only its own layer; the cause is reachable through `source()` (print
//! with `{:#}` under anyhow to see the chain).

use sea_orm::{DbErr, SqlErr};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not one this build can use (unknown scheme or unparseable).
    #[error("invalid database url {url_masked}: {reason}")]
    InvalidUrl { url_masked: String, reason: String },

    /// The server could not be reached or refused the credentials.
    #[error("cannot connect to database {url_masked}")]
    Connect {
        url_masked: String,
        #[source]
        source: DbErr,
    },

    /// A statement failed.
    #[error(transparent)]
    Query(#[from] DbErr),

    /// Applying or rolling back the schema failed, or the recorded schema is unusable.
    #[error("schema migration failed: {message}")]
    Migration {
        message: String,
        #[source]
        source: Option<DbErr>,
    },

    /// `migrate_to` was asked for a version this build does not have.
    #[error("migration target {target} is out of range: valid targets are 0 (empty schema) to {latest}")]
    InvalidTarget { target: u32, latest: u32 },

    /// The lease generation a write was made under has been superseded: another holder (or
    /// this one, after expiry) owns the lease now, and the write must not happen.
    #[error("lease {name} generation {generation} is no longer held")]
    LeaseLost { name: String, generation: i64 },
}

impl DbError {
    /// True when a unique index rejected the write (a duplicate name, message id, step, ...),
    /// which callers usually report as a conflict rather than a failure.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self.db_err().and_then(DbErr::sql_err), Some(SqlErr::UniqueConstraintViolation(_)))
    }

    /// True when a foreign key rejected the write (e.g. a binding to a node that is gone).
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self.db_err().and_then(DbErr::sql_err), Some(SqlErr::ForeignKeyConstraintViolation(_)))
    }

    fn db_err(&self) -> Option<&DbErr> {
        match self {
            DbError::Query(err) => Some(err),
            DbError::Connect { source, .. } => Some(source),
            DbError::Migration { source, .. } => source.as_ref(),
            _ => None,
        }
    }
}
