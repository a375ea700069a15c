//! `demo`: the HA core's main job on the simulated cloud, run as an operator runs it. The
//! demo checks its own outcome (exit 1 when a check fails); these tests check that it
//! completes, that the timeline shows each phase in order, and that what it leaves in
//! `--data-dir` is what `node list` / `node show` read. No timing is asserted: `--deadline`
//! is generous so that a loaded machine only makes the run slower.

use std::path::Path;
use std::process::Command;

use crate::support::{BIN, Run, run_cli};

/// Runs `aos-cloud-manager demo` with `args` and the data in `data_dir`.
fn demo(data_dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("--no-default-config-files")
        .arg("demo")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {BIN}: {error}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("aos-cli-demo-").tempdir().expect("temporary directory")
}

/// Asserts that each of `phases` appears in stdout, each after the one before.
fn assert_in_order(run: &Run, phases: &[&str]) {
    let mut from = 0;
    for phase in phases {
        match run.stdout[from..].find(phase) {
            Some(position) => from += position + phase.len(),
            None => panic!("{phase:?} is missing, or not after {:?}:\n{}", &run.stdout[..from], run.report()),
        }
    }
}

/// The host the demo failed, from its "Servers on HOST (the host that will fail)" line.
fn failed_host(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|line| line.strip_prefix("Servers on ")?.split_once(' ').map(|(host, _)| host.to_owned()))
        .unwrap_or_else(|| panic!("no failing host in the output:\n{}", run.report()))
}

#[test]
fn the_demo_fences_and_evacuates_a_dead_host_by_priority_and_leaves_its_history_for_node_show() {
    let directory = data_dir();
    let run = demo(directory.path(), &["--deadline", "300"]);
    assert!(run.succeeded(), "{}", run.report());
    assert_in_order(
        &run,
        &[
            "host killed",
            "up -> suspect",
            "suspect -> down",
            "recovery requested",
            "task claimed",
            "isolation check",
            "down -> fencing",
            "fencing -> fenced",
            "forced down",
            "fenced -> evacuating",
            "group priority 10: db-1\n",
            "left in place (priority 0): license-1",
            " back ",
            "evacuating -> evacuated",
            "task succeeded",
            "Summary: host-failure",
            "left in place: license-1 (priority 0)",
            "exactly once",
        ],
    );
    assert!(run.stdout.contains("SHUTOFF on compute-"), "the stopped server comes back stopped:\n{}", run.report());
    assert!(!run.stdout.contains("[FAILED]"), "{}", run.report());

    // The database stays in --data-dir, with a configuration naming it.
    let host = failed_host(&run);
    let config = directory.path().join("demo.conf");
    let list = run_cli(&config, &["node", "list"]);
    assert!(list.succeeded(), "{}", list.report());
    let row = list.table_rows().into_iter().find(|row| row.first() == Some(&host));
    assert_eq!(row.as_ref().and_then(|row| row.get(1)).map(String::as_str), Some("evacuated"), "{}", list.report());
    let show = run_cli(&config, &["node", "show", &host]);
    assert!(show.succeeded(), "{}", show.report());
    for transition in ["up -> suspect", "suspect -> down", "fencing -> fenced", "evacuating -> evacuated"] {
        assert!(show.stdout.contains(transition), "node show lacks {transition:?}:\n{}", show.report());
    }
}

#[test]
fn the_storm_demo_evacuates_nothing_and_raises_the_storm_guard_alarm() {
    let directory = data_dir();
    let run = demo(directory.path(), &["--scenario", "storm", "--deadline", "300"]);
    assert!(run.succeeded(), "{}", run.report());
    assert_in_order(
        &run,
        &["host killed", "suspect -> down", "evacuation held", "Summary: storm", "alarm storm_guard"],
    );
    assert!(run.stdout.contains("[ok] nothing was evacuated"), "{}", run.report());
    assert!(!run.stdout.contains("recovery requested"), "{}", run.report());
}

#[test]
fn the_flap_and_partition_demos_leave_the_host_alone() {
    let directory = data_dir();
    let flap = demo(directory.path(), &["--scenario", "flap", "--deadline", "300"]);
    assert!(flap.succeeded(), "{}", flap.report());
    assert_in_order(
        &flap,
        &["host stops", "up -> suspect", "host back", "suspect -> up", "[ok] nothing was evacuated"],
    );

    let partition = demo(directory.path(), &["--scenario", "partition", "--deadline", "300"]);
    assert!(partition.succeeded(), "{}", partition.report());
    assert_in_order(
        &partition,
        &[
            "host cut off",
            "suspect -> down",
            "recovery requested",
            "isolated",
            "outcome: withheld",
            "alarm node_isolated",
        ],
    );
    assert!(partition.stdout.contains("[ok] nothing was evacuated"), "{}", partition.report());
}

#[test]
fn a_demo_that_does_not_complete_before_its_deadline_exits_1_and_says_why() {
    // Nova reports a dead host down only after service_down_time (2 s by default): a
    // deadline of 1 s cannot be met.
    let directory = data_dir();
    let run = demo(directory.path(), &["--deadline", "1"]);
    assert_eq!(run.code, Some(1), "{}", run.report());
    assert!(run.stderr.contains("did not complete within 1 s"), "{}", run.report());
}
