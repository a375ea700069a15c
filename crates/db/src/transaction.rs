//! Starting transactions that will write.

use sea_orm::{DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, TransactionOptions, TransactionTrait};

use crate::DbError;

/// Begins a transaction that is a write transaction from its first statement.
///
/// On SQLite a plain `BEGIN` is deferred: it starts as a reader and must upgrade to the
/// write lock at its first write, and in WAL mode that upgrade fails at once with
/// `SQLITE_BUSY` (no waiting) if another connection wrote in between. `BEGIN IMMEDIATE`
/// takes the write lock up front, waiting up to the busy timeout, so read-then-write
/// transactions are serialised instead of failing. On MySQL/MariaDB this is a plain `BEGIN`
/// (InnoDB locks rows as statements touch them).
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbError> {
    Ok(db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await?)
}
