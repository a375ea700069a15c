//! Portable building blocks shared by every migration: the column types that must differ
//! between MySQL/MariaDB and SQLite, table options, and idempotent create/drop helpers.
//!
//! Decisions recorded here (they hold for the whole schema):
//! - **Timestamps** are `DATETIME(6)` on MySQL/MariaDB and RFC 3339 text on SQLite, always UTC.
//!   `DATETIME` rather than `TIMESTAMP` because `TIMESTAMP` is converted through the session
//!   time zone and ends in 2038; `(6)` because lease expiry and event order need sub-second
//!   precision. sqlx writes `DateTime<Utc>` on SQLite as `YYYY-MM-DDTHH:MM:SS[.f]+00:00`, whose
//!   text order equals time order, so range comparisons (`expires_at <= ?`) work on both.
//!   No timestamp column has a server-side default: SQLite's `CURRENT_TIMESTAMP` writes a
//!   different text format that would break that ordering, so the application always sets
//!   the value.
//! - **Tables** on MySQL are InnoDB with `utf8mb4` and the binary collation `utf8mb4_bin`, so
//!   uniqueness and comparisons are case-sensitive exactly as on SQLite (a host named `Node1`
//!   and one named `node1` are two hosts on both backends).
//! - **Re-runnable `up`**: MySQL cannot roll back DDL, so a migration interrupted half-way
//!   (server restart, lost connection) leaves some tables behind. Tables are created with
//!   `IF NOT EXISTS` and indexes only when missing, so running `up` again finishes the job
//!   instead of failing on the first table that already exists. `down` drops with `IF EXISTS`
//!   for the same reason.
//! - **Transactions**: every migration runs in a transaction (with its bookkeeping row).
//!   On SQLite, whose DDL is transactional, a migration is therefore all-or-nothing; on
//!   MySQL each DDL statement commits implicitly, which the re-runnable `up` covers.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// The answer every migration gives to `MigrationTrait::use_transaction` (see the header).
pub const USE_TRANSACTION: Option<bool> = Some(true);

/// A non-null UTC timestamp column (see the module header for the type choice).
pub fn timestamp(manager: &SchemaManager, column: impl IntoIden) -> ColumnDef {
    timestamp_type(manager, column).not_null().take()
}

/// A nullable UTC timestamp column.
pub fn timestamp_null(manager: &SchemaManager, column: impl IntoIden) -> ColumnDef {
    timestamp_type(manager, column).null().take()
}

fn timestamp_type(manager: &SchemaManager, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match manager.get_database_backend() {
        DbBackend::MySql => def.custom(Alias::new("DATETIME(6)")),
        _ => def.timestamp_with_time_zone(),
    };
    def
}

/// A non-null text column without the 64 KiB limit of MySQL `TEXT`, for raw payloads that
/// may be large or not even valid JSON (MariaDB's `JSON` type would reject those).
pub fn long_text(manager: &SchemaManager, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match manager.get_database_backend() {
        DbBackend::MySql => def.custom(Alias::new("LONGTEXT")),
        _ => def.text(),
    };
    def.not_null().take()
}

/// `CREATE TABLE IF NOT EXISTS` with the MySQL table options of the module header.
pub async fn create_table(manager: &SchemaManager<'_>, mut statement: TableCreateStatement) -> Result<(), DbErr> {
    statement.if_not_exists();
    if manager.get_database_backend() == DbBackend::MySql {
        statement.engine("InnoDB").character_set("utf8mb4").collate("utf8mb4_bin");
    }
    manager.create_table(statement).await
}

/// Creates an index unless one of that name already exists on the table (MySQL 8 has no
/// `CREATE INDEX IF NOT EXISTS`, so the check is done by asking the catalogue).
pub async fn create_index(
    manager: &SchemaManager<'_>,
    table: &str,
    name: &str,
    mut statement: IndexCreateStatement,
) -> Result<(), DbErr> {
    if manager.has_index(table, name).await? {
        return Ok(());
    }
    statement.name(name).table(Alias::new(table));
    manager.create_index(statement).await
}

/// Drops tables in the given order (children before parents, so foreign keys never block).
pub async fn drop_tables(manager: &SchemaManager<'_>, tables: &[&str]) -> Result<(), DbErr> {
    for table in tables {
        manager.drop_table(Table::drop().table(Alias::new(*table)).if_exists().take()).await?;
    }
    Ok(())
}

/// A named foreign key `fk_<table>_<column>` (MySQL wants constraint names unique per
/// database, so the table is part of the name).
pub fn foreign_key(
    table: &str,
    column: impl IntoIden,
    parent: impl IntoIden,
    parent_column: impl IntoIden,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    let column = column.into_iden();
    let column_name = column.to_string();
    ForeignKey::create()
        .name(format!("fk_{table}_{column_name}"))
        .from_col(column)
        .to(parent, parent_column)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Restrict)
        .take()
}
