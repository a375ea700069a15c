//! Migration control: which schema version a database is at, moving it up or down to a
//! version (the CLI's `db list` / `db migrate [--migration N]`), and the start-up check
//! that makes daemons refuse to run on a schema that is not exactly the one they were
//! built for.
//!
//! A version is the 1-based position of a migration in `aos_migrations::Migrator`, equal
//! to the number in its name (`m0004_tasks` is 4). Version 0 is the empty schema. The
//! current version of a database is the highest version recorded as applied; a recorded
//! migration this build does not know (written by a newer release) still counts, by the
//! number in its name, so an older binary sees the database as *ahead* instead of
//! mistaking it for an incomplete one.

use std::collections::BTreeMap;

use aos_migrations::{Migrator, MigratorTrait, migration_number};
use sea_orm::{DatabaseConnection, EntityTrait};
use sea_orm_migration::SchemaManager;
use sea_orm_migration::seaql_migrations;
use tracing::info;

use crate::DbError;

/// One migration as `db list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationInfo {
    pub number: u32,
    pub name: String,
    pub applied: bool,
}

/// What [`migrate_to`] did: the version before and after. `from == to` means nothing was
/// needed ("No changes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOutcome {
    pub from: u32,
    pub to: u32,
}

/// How a database's schema relates to this build's. Daemons start only on `Current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every migration this build knows is applied, and no other.
    Current,
    /// Some of this build's migrations are not applied yet: run `db migrate`.
    Behind { current: u32, latest: u32 },
    /// The database was migrated by a newer release: run that release (or use it to
    /// migrate down) instead.
    Ahead { current: u32, latest: u32 },
}

/// The newest version this build can migrate to.
pub fn latest_version() -> u32 {
    u32::try_from(Migrator::migrations().len()).unwrap_or(u32::MAX)
}

/// Every migration this build knows, in order, with whether it is applied; followed by any
/// applied migration this build does not know (from a newer release).
pub async fn migration_status(db: &DatabaseConnection) -> Result<Vec<MigrationInfo>, DbError> {
    Ok(read_status(db).await?.list)
}

/// The highest applied version (0 = empty schema).
pub async fn current_version(db: &DatabaseConnection) -> Result<u32, DbError> {
    Ok(read_status(db).await?.current())
}

/// Compares the database with this build; reads only (never creates the bookkeeping
/// table), so it works for a database user without DDL rights.
pub async fn schema_status(db: &DatabaseConnection) -> Result<SchemaStatus, DbError> {
    let status = read_status(db).await?;
    let latest = latest_version();
    let current = status.current();
    Ok(if current > latest {
        SchemaStatus::Ahead { current, latest }
    } else if status.list.iter().all(|migration| migration.applied) {
        SchemaStatus::Current
    } else {
        SchemaStatus::Behind { current, latest }
    })
}

/// Migrates up or down to `target` (the latest version when `None`) and reports the
/// versions before and after.
///
/// Refuses a target beyond [`latest_version`] and a database that is ahead of this build
/// (its newer migrations cannot be rolled back by code that does not have them). On
/// MySQL/MariaDB DDL is not transactional, so a failure part-way leaves the migrations
/// before it applied; the error says which step failed and running the command again
/// resumes (the migrations are written to be re-runnable).
pub async fn migrate_to(db: &DatabaseConnection, target: Option<u32>) -> Result<MigrateOutcome, DbError> {
    let latest = latest_version();
    let target = target.unwrap_or(latest);
    if target > latest {
        return Err(DbError::InvalidTarget { target, latest });
    }
    let status = read_status(db).await?;
    let from = status.current();
    if from > latest {
        return Err(DbError::Migration {
            message: format!(
                "the database is at version {from}, newer than this build's latest {latest}; \
                 use the release that wrote it"
            ),
            source: None,
        });
    }

    // Applied migrations above the target come off first (newest first), then missing
    // ones up to the target go on (oldest first).
    let to_roll_back = status.list.iter().filter(|migration| migration.applied && migration.number > target).count();
    let to_apply = status.list.iter().filter(|migration| !migration.applied && migration.number <= target).count();
    if to_roll_back > 0 {
        info!(from, target, steps = to_roll_back, "rolling back migrations");
        Migrator::down(db, Some(steps(to_roll_back))).await.map_err(|source| DbError::Migration {
            message: format!("rolling back from version {from} to {target}"),
            source: Some(source),
        })?;
    }
    if to_apply > 0 {
        info!(from, target, steps = to_apply, "applying migrations");
        Migrator::up(db, Some(steps(to_apply))).await.map_err(|source| DbError::Migration {
            message: format!("applying migrations from version {from} to {target}"),
            source: Some(source),
        })?;
    }
    let to = current_version(db).await?;
    Ok(MigrateOutcome { from, to })
}

fn steps(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

struct Status {
    /// Known migrations in order, then unknown applied ones, sorted by number.
    list: Vec<MigrationInfo>,
}

impl Status {
    fn current(&self) -> u32 {
        self.list.iter().filter(|migration| migration.applied).map(|migration| migration.number).max().unwrap_or(0)
    }
}

async fn read_status(db: &DatabaseConnection) -> Result<Status, DbError> {
    let applied = applied_names(db).await?;
    let mut list = Vec::new();
    let mut known = BTreeMap::new();
    for (index, migration) in Migrator::migrations().iter().enumerate() {
        let name = migration.name().to_owned();
        let number = steps(index + 1);
        known.insert(name.clone(), number);
        list.push(MigrationInfo { number, applied: applied.contains(&name), name });
    }
    let mut unknown = Vec::new();
    for name in applied {
        if known.contains_key(&name) {
            continue;
        }
        let number = migration_number(&name).ok_or_else(|| DbError::Migration {
            message: format!(
                "the database records migration {name:?}, which this build does not know \
                 and whose name carries no version number"
            ),
            source: None,
        })?;
        unknown.push(MigrationInfo { number, name, applied: true });
    }
    unknown.sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
    list.extend(unknown);
    Ok(Status { list })
}

/// Names recorded in sea-orm-migration's bookkeeping table; none when it does not exist.
async fn applied_names(db: &DatabaseConnection) -> Result<Vec<String>, DbError> {
    let table = Migrator::migration_table_name().to_string();
    if !SchemaManager::new(db).has_table(&table).await? {
        return Ok(Vec::new());
    }
    Ok(seaql_migrations::Entity::find().all(db).await?.into_iter().map(|row| row.version).collect())
}
