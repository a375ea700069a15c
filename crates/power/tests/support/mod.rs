//! What the power tests share: the bmc-sim instance `power-tests` (started by
//! scripts/ensure-bmc-sim.sh when it is not running), its host table, device descriptions
//! for its BMCs, short time limits, and fault injection that is always undone.
//!
//! Hosts, one role each so tests running in parallel never collide:
//! aos-pw-1 round trips (IPMI and Redfish), aos-pw-2 unreachable/slow, aos-pw-3 rejected
//! commands, aos-pw-4 read-only checks (wrong credentials, logs), aos-pw-5 / aos-pw-6
//! fencing on MariaDB / SQLite.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use aos_power::{DeviceSpec, DriverKind, PowerSettings, Secret};

pub const REDFISH_PORT: u16 = 9180;

/// The instance's password (scripts/ensure-bmc-sim.sh): distinctive, so a test can look for
/// it in logs and rows.
pub fn password() -> String {
    std::env::var("AOS_BMC_SIM_PASSWORD").unwrap_or_else(|_| "Bmc-s1m-S3cret".into())
}

fn repo_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ensure-bmc-sim.sh")
}

/// Starts the instance once per test binary (a no-op taking ~0.3 s when it runs); returns
/// its run directory.
pub fn run_dir() -> &'static PathBuf {
    static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
    RUN_DIR.get_or_init(|| {
        let status = Command::new(repo_script()).status().expect("run scripts/ensure-bmc-sim.sh");
        assert!(status.success(), "scripts/ensure-bmc-sim.sh failed: the BMC emulators are needed");
        let output = Command::new(repo_script()).arg("--print-run-dir").output().expect("ensure-bmc-sim.sh");
        PathBuf::from(String::from_utf8(output.stdout).expect("utf-8 path").trim())
    })
}

/// rustls needs a process-wide provider before reqwest builds a client (the binaries install
/// it in `main`).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One row of the instance's hosts.tsv.
#[derive(Debug, Clone)]
pub struct SimHost {
    pub name: String,
    pub ipmi_port: u16,
    pub redfish_system_id: String,
    pub mac: String,
}

pub fn host(name: &str) -> SimHost {
    let table = std::fs::read_to_string(run_dir().join("hosts.tsv")).expect("hosts.tsv of the bmc-sim instance");
    table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|fields| fields[0] == name)
        .map(|fields| SimHost {
            name: fields[0].to_owned(),
            ipmi_port: fields[2].parse().expect("port"),
            redfish_system_id: fields[4].to_owned(),
            mac: fields[5].to_owned(),
        })
        .unwrap_or_else(|| panic!("host {name} is not in the bmc-sim instance (see scripts/ensure-bmc-sim.sh)"))
}

pub fn ipmi_spec(host: &SimHost, password: &str) -> DeviceSpec {
    DeviceSpec {
        name: format!("ipmi-{}", host.name),
        driver: DriverKind::Ipmi,
        address: "127.0.0.1".into(),
        port: Some(host.ipmi_port),
        username: Some("admin".into()),
        password: Some(Secret::new(password.to_owned())),
        options: serde_json::json!({}),
    }
}

pub fn redfish_spec(password: &str) -> DeviceSpec {
    DeviceSpec {
        name: "redfish-sim".into(),
        driver: DriverKind::Redfish,
        address: "127.0.0.1".into(),
        port: Some(REDFISH_PORT),
        username: Some("admin".into()),
        password: Some(Secret::new(password.to_owned())),
        options: serde_json::json!({"scheme": "http"}),
    }
}

/// Short limits so fault cases end quickly; the verification deadline stays generous.
pub fn settings() -> PowerSettings {
    PowerSettings {
        command_timeout: Duration::from_secs(8),
        ipmi_retries: 1,
        ipmi_retry_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(200),
        verify_timeout: Duration::from_secs(20),
    }
}

/// A UDP and TCP port on loopback where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    socket.local_addr().expect("local address").port()
}

/// The kit's ctl.sh on this instance.
pub fn ctl(args: &[&str]) {
    let kit = run_dir().parent().expect("run dir parent").join("kit/ctl.sh");
    let output = Command::new(kit).args(args).env("BMC_SIM_RUN_DIR", run_dir()).output().expect("run ctl.sh");
    assert!(output.status.success(), "ctl.sh {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A fault injected with ctl.sh, undone when dropped (also when the test panics).
pub struct Fault {
    undo: Vec<String>,
}

pub fn inject(args: &[&str], undo: &[&str]) -> Fault {
    ctl(args);
    Fault { undo: undo.iter().map(|arg| (*arg).to_owned()).collect() }
}

impl Drop for Fault {
    fn drop(&mut self) {
        let args: Vec<&str> = self.undo.iter().map(String::as_str).collect();
        ctl(&args);
    }
}

/// The IPMI-side state files of a host, as the BMC keeps them (independent of our reads).
pub fn ipmi_power_file(host: &str) -> String {
    std::fs::read_to_string(run_dir().join("ipmi").join(host).join("power")).unwrap_or_default().trim().to_owned()
}

pub fn ipmi_boot_file(host: &str) -> String {
    std::fs::read_to_string(run_dir().join("ipmi").join(host).join("boot")).unwrap_or_default().trim().to_owned()
}

pub fn ipmi_events(host: &str) -> String {
    std::fs::read_to_string(run_dir().join("ipmi").join(host).join("events")).unwrap_or_default()
}
