//! `db migrate` and `db list` against a real database, with the reference tool's output.

use crate::support::{Backend, Fixture, on_both_backends};

const MIGRATE_HEADER: [&str; 4] = ["N", "Module name", "Status", "Result"];

async fn migrate_brings_an_empty_database_to_the_latest_version_then_reports_no_changes(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    let latest = aos_db::latest_version();

    let first = fixture.run(&["db", "migrate"]);
    assert!(first.succeeded(), "{}", first.report());
    assert_eq!(first.table_rows().first().map(Vec::as_slice), Some(MIGRATE_HEADER.map(String::from).as_slice()));
    first.assert_row(&["1", "cloud_manager", "Success", &format!("0 -> {latest}")]);
    assert_eq!(fixture.current_version().await, latest);

    let again = fixture.run(&["db", "migrate"]);
    assert!(again.succeeded(), "{}", again.report());
    again.assert_row(&["1", "cloud_manager", "Success", "No changes"]);
    assert_eq!(fixture.current_version().await, latest);

    fixture.cleanup().await;
}

async fn migrate_goes_down_to_a_chosen_migration_and_back_up_and_list_shows_each_migration(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    let latest = aos_db::latest_version();
    let names = fixture.migration_names().await;
    assert_eq!(names.len(), latest as usize);
    assert!(fixture.run(&["db", "migrate"]).succeeded());

    let down = fixture.run(&["db", "migrate", "--migration", "1"]);
    assert!(down.succeeded(), "{}", down.report());
    down.assert_row(&["1", "cloud_manager", "Success", &format!("{latest} -> 1")]);

    let list = fixture.run(&["db", "list"]);
    assert!(list.succeeded(), "{}", list.report());
    assert!(list.stdout.contains("Module name: cloud_manager"), "{}", list.report());
    assert!(
        list.stdout.contains(&format!("Current version: 1 (latest known: {latest})")),
        "db list does not show version 1:\n{}",
        list.report()
    );
    list.assert_row(&["N", "Migration", "Status"]);
    for (index, name) in names.iter().enumerate() {
        let status = if index == 0 { "Applied" } else { "Not applied" };
        list.assert_row(&[&(index + 1).to_string(), name, status]);
    }

    let up = fixture.run(&["db", "migrate"]);
    assert!(up.succeeded(), "{}", up.report());
    up.assert_row(&["1", "cloud_manager", "Success", &format!("1 -> {latest}")]);
    let list = fixture.run(&["db", "list"]);
    assert!(list.stdout.contains(&format!("Current version: {latest} (latest known: {latest})")), "{}", list.report());
    for (index, name) in names.iter().enumerate() {
        list.assert_row(&[&(index + 1).to_string(), name, "Applied"]);
    }

    fixture.cleanup().await;
}

async fn list_on_an_empty_database_shows_version_zero_and_nothing_applied(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    let list = fixture.run(&["db", "list"]);
    assert!(list.succeeded(), "{}", list.report());
    assert!(list.stdout.contains("Current version: 0 "), "{}", list.report());
    for (index, name) in fixture.migration_names().await.iter().enumerate() {
        list.assert_row(&[&(index + 1).to_string(), name, "Not applied"]);
    }
    fixture.cleanup().await;
}

async fn migrate_to_a_migration_beyond_the_latest_fails_naming_the_valid_range(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    let latest = aos_db::latest_version();

    let beyond = fixture.run(&["db", "migrate", "--migration", "99"]);
    assert!(!beyond.succeeded(), "{}", beyond.report());
    let printed = format!("{}{}", beyond.stdout, beyond.stderr);
    assert!(printed.contains("99"), "the message names the target:\n{}", beyond.report());
    assert!(
        printed.contains(&format!("0 (empty schema) to {latest}")),
        "the message names the valid range:\n{}",
        beyond.report()
    );
    assert!(beyond.table_rows().iter().any(|row| row.get(2).is_some_and(|status| status == "Failed")));
    assert_eq!(fixture.current_version().await, 0, "a refused target changes nothing");

    fixture.cleanup().await;
}

async fn verbose_migrate_names_every_migration_it_applies_or_reverts(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    let names = fixture.migration_names().await;

    let up = fixture.run(&["db", "migrate", "-v"]);
    assert!(up.succeeded(), "{}", up.report());
    for name in &names {
        assert!(
            up.stdout.lines().any(|line| line.starts_with("applied") && line.trim_end().ends_with(name.as_str())),
            "{name} not listed as applied:\n{}",
            up.report()
        );
    }

    let down = fixture.run(&["db", "migrate", "-v", "--migration", "1"]);
    assert!(down.succeeded(), "{}", down.report());
    assert!(!down.stdout.contains(&names[0]), "migration 1 stays applied:\n{}", down.report());
    for name in &names[1..] {
        assert!(
            down.stdout.lines().any(|line| line.starts_with("reverted") && line.trim_end().ends_with(name.as_str())),
            "{name} not listed as reverted:\n{}",
            down.report()
        );
    }

    fixture.cleanup().await;
}

async fn module_name_cloud_manager_is_accepted_and_any_other_is_rejected(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;

    let other = fixture.run(&["db", "migrate", "-n", "other"]);
    assert!(!other.succeeded(), "{}", other.report());
    assert!(other.stderr.contains("\"other\"") && other.stderr.contains("cloud_manager"), "{}", other.report());
    assert_eq!(fixture.current_version().await, 0, "a rejected module name migrates nothing");
    let other = fixture.run(&["db", "list", "-n", "other"]);
    assert!(!other.succeeded(), "{}", other.report());
    assert!(other.stderr.contains("\"other\""), "{}", other.report());

    let named = fixture.run(&["db", "migrate", "-n", "cloud_manager"]);
    assert!(named.succeeded(), "{}", named.report());
    named.assert_row(&["1", "cloud_manager", "Success", &format!("0 -> {}", aos_db::latest_version())]);
    let named = fixture.run(&["db", "list", "--name", "cloud_manager"]);
    assert!(named.succeeded(), "{}", named.report());

    fixture.cleanup().await;
}

on_both_backends!(
    migrate_brings_an_empty_database_to_the_latest_version_then_reports_no_changes,
    migrate_goes_down_to_a_chosen_migration_and_back_up_and_list_shows_each_migration,
    list_on_an_empty_database_shows_version_zero_and_nothing_applied,
    migrate_to_a_migration_beyond_the_latest_fails_naming_the_valid_range,
    verbose_migrate_names_every_migration_it_applies_or_reverts,
    module_name_cloud_manager_is_accepted_and_any_other_is_rejected,
);
