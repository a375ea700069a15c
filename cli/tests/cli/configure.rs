//! `configure`: example files written once, then one line per installation check.

use aos_config::ExampleFile;

use crate::support::{Backend, Fixture, Run, on_both_backends};

const EXAMPLES: [(&str, ExampleFile); 2] =
    [("aos.conf.example", ExampleFile::AosConf), ("cloud_manager.conf.example", ExampleFile::CloudManagerConf)];

fn check_line<'a>(run: &'a Run, mark: &str, check: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|line| line.starts_with(&format!("{mark} {check}")))
        .unwrap_or_else(|| panic!("no `{mark} {check}` line:\n{}", run.report()))
}

async fn configure_writes_the_examples_and_passes_on_a_migrated_database_and_a_reachable_broker(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    let etc = fixture.directory.path().join("etc");
    let etc_arg = etc.display().to_string();
    let migrate = fixture.run(&["db", "migrate"]);
    assert!(migrate.succeeded(), "{}", migrate.report());

    let run = fixture.run(&["configure", "--etc-dir", &etc_arg]);
    assert!(run.succeeded(), "{}", run.report());
    for (name, file) in EXAMPLES {
        let path = etc.join(name);
        let written = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(written, aos_config::render_example(file), "{name}");
        assert!(check_line(&run, "[ OK ]", &format!("example {}", path.display())).ends_with("written"));
    }
    check_line(&run, "[ OK ]", "configuration");
    let database = check_line(&run, "[ OK ]", "database");
    assert!(database.contains("schema current"), "{database}");
    check_line(&run, "[ OK ]", "message broker");
    assert!(!run.stdout.contains("[FAIL]"), "{}", run.report());
    assert!(run.stdout.contains("all checks passed"), "{}", run.report());

    // A second run leaves what is there alone, even a file the operator edited.
    let edited = etc.join("cloud_manager.conf.example");
    std::fs::write(&edited, "# edited by the operator\n").unwrap();
    let untouched = std::fs::read_to_string(etc.join("aos.conf.example")).unwrap();
    let again = fixture.run(&["configure", "--etc-dir", &etc_arg]);
    assert!(again.succeeded(), "{}", again.report());
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "# edited by the operator\n");
    assert_eq!(std::fs::read_to_string(etc.join("aos.conf.example")).unwrap(), untouched);
    for (name, _) in EXAMPLES {
        let line = check_line(&again, "[ OK ]", &format!("example {}", etc.join(name).display()));
        assert!(line.ends_with("present, left unchanged"), "{line}");
    }

    fixture.cleanup().await;
}

async fn configure_fails_with_a_database_line_when_the_schema_is_behind(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    let etc = fixture.directory.path().join("etc");

    let run = fixture.run(&["configure", "--etc-dir", &etc.display().to_string()]);
    assert!(!run.succeeded(), "{}", run.report());
    let database = check_line(&run, "[FAIL]", "database");
    assert!(database.contains(&format!("schema at 0 of {}", aos_db::latest_version())), "{database}");
    assert!(database.contains("aos-cloud-manager db migrate"), "the line says how to fix it: {database}");
    // The other checks still ran and passed; only the database failed.
    check_line(&run, "[ OK ]", "configuration");
    check_line(&run, "[ OK ]", "message broker");
    assert_eq!(run.stdout.lines().filter(|line| line.starts_with("[FAIL]")).count(), 1, "{}", run.report());
    for (name, _) in EXAMPLES {
        assert!(etc.join(name).is_file(), "{name} is written even when a check fails");
    }

    fixture.cleanup().await;
}

on_both_backends!(
    configure_writes_the_examples_and_passes_on_a_migrated_database_and_a_reachable_broker,
    configure_fails_with_a_database_line_when_the_schema_is_behind,
);
