//! `power-device`, `power` and `node init` against the BMC emulators of ../shared/bmc-sim
//! (instance `power-tests`, started by scripts/ensure-bmc-sim.sh): aos-pw-5 for MariaDB and
//! aos-pw-6 for SQLite, so both backends run in parallel without sharing a host. The password
//! is never printed, and never in the database in clear.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{Backend, Fixture, on_both_backends};

fn bmc_password() -> String {
    std::env::var("AOS_BMC_SIM_PASSWORD").unwrap_or_else(|_| "Bmc-s1m-S3cret".into())
}

/// Starts the emulators once per test run (a fast no-op when they answer); returns the
/// instance's run directory.
fn bmc_sim_run_dir() -> &'static PathBuf {
    static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
    RUN_DIR.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-bmc-sim.sh");
        assert!(Command::new(&script).status().expect("run ensure-bmc-sim.sh").success(), "bmc-sim did not start");
        let output = Command::new(&script).arg("--print-run-dir").output().expect("ensure-bmc-sim.sh");
        PathBuf::from(String::from_utf8(output.stdout).expect("utf-8").trim())
    })
}

/// (host name, IPMI port) for the backend.
fn sim_host(backend: Backend) -> (&'static str, u16) {
    match backend {
        Backend::MySql => ("aos-pw-5", 9105),
        Backend::Sqlite => ("aos-pw-6", 9106),
    }
}

fn ipmi_power_file(host: &str) -> String {
    std::fs::read_to_string(bmc_sim_run_dir().join("ipmi").join(host).join("power"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A fixture whose `[power] credential_key_file` names a key made by `generate-key`, in a
/// directory that lives as long as the returned `TempDir`.
async fn power_fixture(backend: Backend) -> (Fixture, tempfile::TempDir) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let key = directory.path().join("power.key");
    let fixture = Fixture::new(backend, &format!("[power]\ncredential_key_file = {}\nverify_timeout = 20\ncommand_timeout = 8\nipmi_retry_timeout = 1\npoll_interval = 1\n", key.display())).await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());
    let generated = fixture.run(&["power-device", "generate-key"]);
    assert!(generated.succeeded(), "{}", generated.report());
    (fixture, directory)
}

/// Adds `host` as a node the way node sync does.
async fn add_node(fixture: &Fixture, host: &str) {
    let db = fixture.database.connect().await.expect("connect");
    let observed = aos_db::ObservedComputeHost::up_and_enabled(host, None);
    aos_db::sync_nodes(&db, None, "test", &[observed]).await.expect("sync a node");
    db.close().await.expect("close");
}

async fn power_devices_are_created_listed_shown_and_deleted_without_ever_printing_the_password(backend: Backend) {
    let (fixture, _key_directory) = power_fixture(backend).await;
    let password_file = fixture.directory.path().join("bmc.password");
    let secret = "Cl1-Secret-Never-Shown";
    std::fs::write(&password_file, format!("{secret}\n")).unwrap();
    let create = fixture.run(&[
        "power-device",
        "create",
        "bmc-1",
        "--driver",
        "ipmi",
        "--address",
        "127.0.0.1",
        "--port",
        "9999",
        "--username",
        "admin",
        "--password-file",
        password_file.to_str().unwrap(),
        "--options",
        r#"{"cipher_suite": 3}"#,
    ]);
    assert!(create.succeeded(), "{}", create.report());
    let duplicate = fixture.run(&["power-device", "create", "bmc-1", "--driver", "ipmi", "--address", "127.0.0.1"]);
    assert!(!duplicate.succeeded() && duplicate.stderr.contains("already exists"), "{}", duplicate.report());
    let bad = fixture.run(&["power-device", "create", "x", "--driver", "snmp", "--address", "127.0.0.1"]);
    assert!(!bad.succeeded() && bad.stderr.contains("not implemented yet"), "{}", bad.report());

    let list = fixture.run(&["power-device", "list"]);
    assert!(list.succeeded(), "{}", list.report());
    list.assert_row(&["bmc-1", "ipmi", "127.0.0.1", "9999", "admin", "set", "-"]);
    let show = fixture.run(&["power-device", "show", "bmc-1"]);
    show.assert_row(&["password", "set"]);
    assert_eq!(fixture.run(&["power-device", "show", "nope"]).code, Some(2));

    let mut runs = vec![create, duplicate, list, show];
    let delete = fixture.run(&["power-device", "delete", "bmc-1"]);
    assert!(delete.succeeded(), "{}", delete.report());
    runs.push(delete);
    for run in &runs {
        assert!(!run.report().contains(secret), "printed the password: {}", run.report());
    }
    fixture.cleanup().await;
}

async fn power_commands_drive_a_bmc_by_node_and_by_device_and_node_init_binds_it(backend: Backend) {
    let (host, port) = sim_host(backend);
    bmc_sim_run_dir();
    let (fixture, _key_directory) = power_fixture(backend).await;
    let password_file = fixture.directory.path().join("bmc.password");
    std::fs::write(&password_file, bmc_password()).unwrap();
    let create = fixture.run(&[
        "power-device",
        "create",
        "bmc-sim",
        "--driver",
        "ipmi",
        "--address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--username",
        "admin",
        "--password-file",
        password_file.to_str().unwrap(),
    ]);
    assert!(create.succeeded(), "{}", create.report());
    add_node(&fixture, host).await;

    let unbound = fixture.run(&["power", "status", host]);
    assert!(!unbound.succeeded() && unbound.stderr.contains("has no power device"), "{}", unbound.report());
    let init = fixture.run(&["node", "init", host, "--device", "bmc-sim"]);
    assert!(init.succeeded(), "{}", init.report());
    init.assert_row(&[host, "bmc-sim", "-"]);

    let on = fixture.run(&["power", "on", host]);
    assert!(on.succeeded(), "{}", on.report());
    assert_eq!(ipmi_power_file(host), "on");
    let off = fixture.run(&["power", "off", host]);
    assert!(off.succeeded(), "{}", off.report());
    assert!(
        off.table_rows().iter().any(|row| row[2] == "off" && row[3] == "succeeded" && row[4] == "off"),
        "{}",
        off.report()
    );
    assert_eq!(ipmi_power_file(host), "off", "the BMC is off");
    let status = fixture.run(&["power", "status", "--device", "bmc-sim"]);
    assert!(status.succeeded(), "{}", status.report());
    assert!(status.table_rows().iter().any(|row| row[4] == "off"), "{}", status.report());
    for verb in ["reset", "cycle", "soft-off", "on", "bootdev-pxe"] {
        let run = fixture.run(&["power", verb, host]);
        assert!(run.succeeded(), "{verb}: {}", run.report());
    }
    assert_eq!(ipmi_power_file(host), "on");

    // Bulk form: all or nothing, errors name file and line.
    let file = fixture.directory.path().join("bindings.txt");
    std::fs::write(&file, format!("# node device [outlet]\n{host} bmc-sim\nghost-host bmc-sim\n")).unwrap();
    let bulk = fixture.run(&["node", "init", "--from-file", file.to_str().unwrap()]);
    assert!(!bulk.succeeded() && bulk.stderr.contains("bindings.txt:3:"), "{}", bulk.report());

    // Every operation is recorded against the node.
    let db = fixture.database.connect().await.expect("connect");
    let node = aos_db::find_node(&db, host).await.expect("read node").expect("the node");
    let operations = aos_power::recent_operations(&db, node.id, 50).await.expect("read operations");
    assert_eq!(operations.len(), 8, "on, off, status, reset, cycle, soft-off, on, bootdev-pxe: {operations:?}");
    assert!(operations.iter().all(|op| op.result.as_deref() == Some("succeeded") && op.actor.starts_with("cli:")));
    db.close().await.expect("close");
    fixture.cleanup().await;
}

async fn the_reserve_pool_takes_only_hosts_with_a_power_device(backend: Backend) {
    let (fixture, _key_directory) = power_fixture(backend).await;
    let password_file = fixture.directory.path().join("bmc.password");
    std::fs::write(&password_file, "pool-test\n").unwrap();
    let create = fixture.run(&[
        "power-device",
        "create",
        "bmc-pool",
        "--driver",
        "ipmi",
        "--address",
        "127.0.0.1",
        "--username",
        "admin",
        "--password-file",
        password_file.to_str().unwrap(),
    ]);
    assert!(create.succeeded(), "{}", create.report());
    add_node(&fixture, "cmp-pool").await;
    let refused = fixture.run(&["reserve", "pool", "add", "cmp-pool"]);
    assert_eq!(refused.code, Some(2), "{}", refused.report());
    assert!(refused.stderr.contains("no power device"), "{}", refused.report());
    assert!(fixture.run(&["node", "init", "cmp-pool", "--device", "bmc-pool"]).succeeded());
    let bad_mac = fixture.run(&["reserve", "pool", "add", "cmp-pool", "--boot-mac", "52:54:zz:00:00:01"]);
    assert!(!bad_mac.succeeded() && bad_mac.stderr.contains("52:54:zz:00:00:01"), "{}", bad_mac.report());
    let add = fixture.run(&["reserve", "pool", "add", "cmp-pool", "--boot-mac", "52-54-00-AA-BB-CC"]);
    assert!(add.succeeded(), "{}", add.report());
    let list = fixture.run(&["reserve", "pool", "list"]);
    assert!(
        list.table_rows().iter().any(|row| row == &["cmp-pool", "up", "-", "52:54:00:aa:bb:cc"]),
        "{}",
        list.report()
    );
    let all = fixture.run(&["reserve", "list"]);
    assert!(all.succeeded() && all.stdout.contains("cmp-pool"), "{}", all.report());
    let history = fixture.run(&["node", "history", "cmp-pool"]);
    assert!(history.stdout.contains("pool_joined"), "{}", history.report());
    let remove = fixture.run(&["reserve", "pool", "remove", "cmp-pool"]);
    assert!(remove.succeeded(), "{}", remove.report());
    let again = fixture.run(&["reserve", "pool", "remove", "cmp-pool"]);
    assert_eq!(again.code, Some(2), "{}", again.report());
    fixture.cleanup().await;
}

on_both_backends!(
    the_reserve_pool_takes_only_hosts_with_a_power_device,
    power_devices_are_created_listed_shown_and_deleted_without_ever_printing_the_password,
    power_commands_drive_a_bmc_by_node_and_by_device_and_node_init_binds_it,
);
