//! The aos-cloud-manager database schema as numbered, reversible migrations.
//!
//! Each migration lives in `m000N_<what>.rs`; `N` is its 1-based position in
//! [`Migrator::migrations`] and the version number operators see in `db list` and pass to
//! `db migrate --migration N`. Every migration has a working `down`, builds its DDL with the
//! sea-query schema builder so the same code runs on MySQL/MariaDB and SQLite, and never
//! changes once released: later changes are new migrations.
//!
//! Only the `aos-db` crate uses this crate; it owns the connection and exposes migration
//! control (`migrate_to`, `schema_status`) to the CLI and the daemons.

pub use sea_orm_migration::{MigrationTrait, MigratorTrait};

mod m0001_nodes;
mod m0002_power;
mod m0003_storage_reserve;
mod m0004_tasks;
mod m0005_events_alarms_audit;
mod m0006_coordination;
mod m0007_reserve_pool;
mod m0008_agent;
mod m0009_drs;
mod support;

/// The ordered list of every migration this build knows.
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_nodes::Migration),
            Box::new(m0002_power::Migration),
            Box::new(m0003_storage_reserve::Migration),
            Box::new(m0004_tasks::Migration),
            Box::new(m0005_events_alarms_audit::Migration),
            Box::new(m0006_coordination::Migration),
            Box::new(m0007_reserve_pool::Migration),
            Box::new(m0008_agent::Migration),
            Box::new(m0009_drs::Migration),
        ]
    }
}

/// The version number encoded in a migration name (`m0004_tasks` → 4), or `None` when the
/// name does not follow the `m<digits>_<what>` convention.
///
/// Parsing the name (rather than counting positions) lets a binary recognise a migration
/// recorded by a newer release that it does not know, and report the database as ahead.
pub fn migration_number(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('m')?;
    let (digits, what) = rest.split_once('_')?;
    if digits.is_empty() || what.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_numbers_are_their_one_based_positions() {
        let names: Vec<String> = Migrator::migrations().iter().map(|migration| migration.name().to_owned()).collect();
        assert!(!names.is_empty());
        for (index, name) in names.iter().enumerate() {
            assert_eq!(
                migration_number(name),
                Some(u32::try_from(index + 1).unwrap()),
                "migration {name} is at position {}",
                index + 1
            );
        }
    }

    #[test]
    fn migration_number_rejects_names_outside_the_convention() {
        assert_eq!(migration_number("m0012_later"), Some(12));
        assert_eq!(migration_number("m20220101_000001_create_table"), Some(20220101));
        assert_eq!(migration_number("0001_nodes"), None);
        assert_eq!(migration_number("m_nodes"), None);
        assert_eq!(migration_number("m0001"), None);
        assert_eq!(migration_number("m0001_"), None);
        assert_eq!(migration_number("mx001_nodes"), None);
    }
}
