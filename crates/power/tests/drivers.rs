//! The IPMI and Redfish drivers against the real emulators of ../shared/bmc-sim, and the SSH
//! driver with local command templates: every operation round-trips and reads back, and each
//! failure (unreachable, wrong credentials, rejected, timed out) is its own error kind.

mod support;

use std::time::Instant;

use aos_power::{BootDevice, PowerAction, PowerErrorKind, PowerSettings, PowerState, connect_driver, perform};
use support::{host, inject, ipmi_spec, password, redfish_spec, settings};

async fn act(
    spec: &aos_power::DeviceSpec,
    outlet: &str,
    action: PowerAction,
    settings: &PowerSettings,
) -> Result<aos_power::ActionOutcome, aos_power::PowerError> {
    let driver = connect_driver(spec, outlet, settings)?;
    perform(driver.as_ref(), action, settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ipmi_operation_round_trips_and_the_bmc_state_matches_what_we_read_back() {
    let host = host("aos-pw-1");
    let spec = ipmi_spec(&host, &password());
    let settings = settings();
    let done = |action| act(&spec, "", action, &settings);

    assert_eq!(done(PowerAction::On).await.unwrap().state, PowerState::On);
    assert_eq!(support::ipmi_power_file("aos-pw-1"), "on");

    let off = done(PowerAction::Off).await.unwrap();
    assert_eq!((off.state, off.command_sent), (PowerState::Off, true));
    assert_eq!(support::ipmi_power_file("aos-pw-1"), "off", "the BMC itself is off");
    assert_eq!(done(PowerAction::Status).await.unwrap().state, PowerState::Off);
    let again = done(PowerAction::Off).await.unwrap();
    assert!(!again.command_sent, "off when off sends nothing");

    assert_eq!(done(PowerAction::On).await.unwrap().state, PowerState::On);
    assert_eq!(support::ipmi_power_file("aos-pw-1"), "on");
    assert_eq!(done(PowerAction::SoftOff).await.unwrap().state, PowerState::Off);
    assert_eq!(support::ipmi_power_file("aos-pw-1"), "off");

    // Reset and cycle of a host that is off power it on; of a running host, they reset/cycle.
    assert_eq!(done(PowerAction::Reset).await.unwrap().state, PowerState::On);
    let events_before = support::ipmi_events("aos-pw-1").lines().count();
    assert_eq!(done(PowerAction::Reset).await.unwrap().state, PowerState::On);
    assert_eq!(done(PowerAction::Cycle).await.unwrap().state, PowerState::On);
    let events = support::ipmi_events("aos-pw-1");
    let new_events: Vec<&str> = events.lines().skip(events_before).collect();
    assert!(new_events.iter().any(|line| line.ends_with(" reset")), "{new_events:?}");
    assert!(new_events.iter().any(|line| line.ends_with(" cycle")), "{new_events:?}");

    let pxe = done(PowerAction::BootdevPxe).await.unwrap();
    assert_eq!(pxe.boot_device, Some(BootDevice::Pxe));
    assert_eq!(support::ipmi_boot_file("aos-pw-1"), "network", "pyghmi stores pxe as network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redfish_operation_round_trips_with_the_state_read_back() {
    support::install_crypto_provider();
    support::run_dir();
    let spec = redfish_spec(&password());
    let settings = settings();
    // The system by name (the outlet of a Redfish manager with several systems).
    let done = |action| act(&spec, "aos-pw-1", action, &settings);

    assert_eq!(done(PowerAction::On).await.unwrap().state, PowerState::On);
    let off = done(PowerAction::Off).await.unwrap();
    assert_eq!((off.state, off.command_sent), (PowerState::Off, true));
    assert_eq!(done(PowerAction::Status).await.unwrap().state, PowerState::Off);
    assert!(!done(PowerAction::Off).await.unwrap().command_sent);
    assert_eq!(done(PowerAction::On).await.unwrap().state, PowerState::On);
    assert_eq!(done(PowerAction::SoftOff).await.unwrap().state, PowerState::Off);
    assert_eq!(done(PowerAction::Reset).await.unwrap().state, PowerState::On, "reset of an off host powers it on");
    assert_eq!(done(PowerAction::Reset).await.unwrap().state, PowerState::On);
    // Redfish has no PowerCycle here (501): the operation layer does off, verify off, on.
    let cycle = done(PowerAction::Cycle).await.unwrap();
    assert_eq!((cycle.state, cycle.command_sent), (PowerState::On, true));
    assert_eq!(done(PowerAction::BootdevPxe).await.unwrap().boot_device, Some(BootDevice::Pxe));

    // The same system by id and by path.
    let system = host("aos-pw-1").redfish_system_id;
    assert_eq!(act(&spec, &system, PowerAction::Status, &settings).await.unwrap().state, PowerState::On);
    let path = format!("/redfish/v1/Systems/{system}");
    assert_eq!(act(&spec, &path, PowerAction::Status, &settings).await.unwrap().state, PowerState::On);
    // Without a system name, a BMC with several systems is an error that says what to do.
    let error = act(&spec, "", PowerAction::Status, &settings).await.unwrap_err();
    assert!(error.to_string().contains("6 systems"), "{error}");
    let error = act(&spec, "no-such-host", PowerAction::Status, &settings).await.unwrap_err();
    assert!(error.to_string().contains("no system \"no-such-host\""), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_ipmi_bmc_is_unreachable_within_the_timeout() {
    let host = host("aos-pw-2");
    let spec = ipmi_spec(&host, &password());
    let _paused = inject(&["pause", "aos-pw-2"], &["resume", "aos-pw-2"]);
    let started = Instant::now();
    let error = act(&spec, "", PowerAction::Off, &settings()).await.unwrap_err();
    eprintln!("ipmi paused BMC: {:?} after {:?}: {error}", error.kind(), started.elapsed());
    assert_eq!(error.kind(), PowerErrorKind::Unreachable, "{error}");
    assert!(error.to_string().contains("127.0.0.1:9102"), "the message names the BMC: {error}");

    let mut closed = spec.clone();
    closed.port = Some(support::closed_port());
    let error = act(&closed, "", PowerAction::Status, &settings()).await.unwrap_err();
    assert_eq!(error.kind(), PowerErrorKind::Unreachable, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ipmi_credentials_are_auth_failed() {
    let host = host("aos-pw-4");
    let started = Instant::now();
    let error = act(&ipmi_spec(&host, "Wrong-Pa55"), "", PowerAction::Status, &settings()).await.unwrap_err();
    eprintln!("ipmi wrong password: {:?} after {:?}: {error}", error.kind(), started.elapsed());
    assert_eq!(error.kind(), PowerErrorKind::AuthFailed, "{error}");
    assert!(!error.to_string().contains("Wrong-Pa55"));

    let mut unknown_user = ipmi_spec(&host, &password());
    unknown_user.username = Some("nobody".into());
    let error = act(&unknown_user, "", PowerAction::Status, &settings()).await.unwrap_err();
    assert_eq!(error.kind(), PowerErrorKind::AuthFailed, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_commands_the_bmc_refuses_are_rejected_and_a_slow_bmc_times_out() {
    let host = host("aos-pw-3");
    let spec = ipmi_spec(&host, &password());
    let settings = settings();
    assert_eq!(act(&spec, "", PowerAction::On, &settings).await.unwrap().state, PowerState::On);
    {
        let _failing = inject(&["fail", "aos-pw-3", "on"], &["fail", "aos-pw-3", "off"]);
        let started = Instant::now();
        let error = act(&spec, "", PowerAction::Off, &settings).await.unwrap_err();
        eprintln!("ipmi refused off: {:?} after {:?}: {error}", error.kind(), started.elapsed());
        assert_eq!(error.kind(), PowerErrorKind::Rejected, "{error}");
        assert!(error.to_string().contains("Unspecified error"), "{error}");
        // ipmitool exits 0 on a refused bootdev: the refusal is still seen.
        let error = act(&spec, "", PowerAction::BootdevPxe, &settings).await.unwrap_err();
        assert_eq!(error.kind(), PowerErrorKind::Rejected, "{error}");
        assert_eq!(act(&spec, "", PowerAction::Status, &settings).await.unwrap().state, PowerState::On);
    }
    {
        let _slow = inject(&["delay", "aos-pw-3", "6"], &["delay", "aos-pw-3", "off"]);
        let mut short = settings.clone();
        short.command_timeout = std::time::Duration::from_secs(2);
        let started = Instant::now();
        let error = act(&spec, "", PowerAction::Off, &short).await.unwrap_err();
        eprintln!("ipmi slow BMC (2 s limit): {:?} after {:?}: {error}", error.kind(), started.elapsed());
        assert_eq!(error.kind(), PowerErrorKind::TimedOut, "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_failures_are_auth_failed_rejected_unreachable_and_timed_out() {
    support::install_crypto_provider();
    support::run_dir();
    let settings = settings();

    let started = Instant::now();
    let error = act(&redfish_spec("Wrong-Pa55"), "aos-pw-4", PowerAction::Status, &settings).await.unwrap_err();
    eprintln!("redfish wrong password: {:?} after {:?}: {error}", error.kind(), started.elapsed());
    assert_eq!(error.kind(), PowerErrorKind::AuthFailed, "{error}");

    {
        let _failing = inject(&["redfish-fail", "aos-pw-3", "on"], &["redfish-fail", "aos-pw-3", "off"]);
        let started = Instant::now();
        let error = act(
            &redfish_spec(&password()),
            "/redfish/v1/Systems/b3c0ffee-0000-4000-8000-000000000003",
            PowerAction::Off,
            &settings,
        )
        .await
        .unwrap_err();
        eprintln!("redfish failing system: {:?} after {:?}: {error}", error.kind(), started.elapsed());
        assert_eq!(error.kind(), PowerErrorKind::Rejected, "{error}");
        assert!(error.to_string().contains("HTTP 500"), "{error}");
    }

    let mut closed = redfish_spec(&password());
    closed.port = Some(support::closed_port());
    let started = Instant::now();
    let error = act(&closed, "aos-pw-4", PowerAction::Status, &settings).await.unwrap_err();
    eprintln!("redfish nothing listening: {:?} after {:?}: {error}", error.kind(), started.elapsed());
    assert_eq!(error.kind(), PowerErrorKind::Unreachable, "{error}");

    {
        let _slow = inject(&["redfish-delay", "aos-pw-2", "6"], &["redfish-delay", "aos-pw-2", "off"]);
        let mut short = settings.clone();
        short.command_timeout = std::time::Duration::from_secs(2);
        let started = Instant::now();
        let error = act(
            &redfish_spec(&password()),
            "/redfish/v1/Systems/b3c0ffee-0000-4000-8000-000000000002",
            PowerAction::Status,
            &short,
        )
        .await
        .unwrap_err();
        eprintln!("redfish hung system (2 s limit): {:?} after {:?}: {error}", error.kind(), started.elapsed());
        assert_eq!(error.kind(), PowerErrorKind::TimedOut, "{error}");
    }
}

/// A device in a temporary directory: a file holding its state, commands writing it.
fn lab_spec(directory: &std::path::Path, commands: serde_json::Value) -> aos_power::DeviceSpec {
    aos_power::DeviceSpec {
        name: "lab".into(),
        driver: aos_power::DriverKind::Ssh,
        address: directory.display().to_string(),
        port: None,
        username: Some("virt".into()),
        password: Some(aos_power::Secret::new("Lab-S3cret".into())),
        options: serde_json::json!({ "commands": commands }),
    }
}

#[tokio::test]
async fn ssh_command_templates_round_trip_with_placeholders_and_the_password_in_the_environment() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("vm1"), "shut off\n").unwrap();
    let spec = lab_spec(
        directory.path(),
        serde_json::json!({
            "status": "cat {address}/{outlet}",
            "on": "test \"$AOS_POWER_PASSWORD\" = Lab-S3cret && echo running > {address}/{outlet}",
            "off": "echo 'shut off' > {address}/{outlet}",
            "reset": "echo reset >> {address}/{outlet}.log",
            "bootdev_pxe": "echo network > {address}/{outlet}.boot",
            "bootdev_get": "cat {address}/{outlet}.boot",
        }),
    );
    let settings = settings();
    assert_eq!(act(&spec, "vm1", PowerAction::Status, &settings).await.unwrap().state, PowerState::Off);
    assert_eq!(act(&spec, "vm1", PowerAction::On, &settings).await.unwrap().state, PowerState::On);
    assert_eq!(std::fs::read_to_string(directory.path().join("vm1")).unwrap(), "running\n");
    assert_eq!(act(&spec, "vm1", PowerAction::Reset, &settings).await.unwrap().state, PowerState::On);
    assert_eq!(act(&spec, "vm1", PowerAction::Cycle, &settings).await.unwrap().state, PowerState::On, "off + on");
    assert_eq!(act(&spec, "vm1", PowerAction::Off, &settings).await.unwrap().state, PowerState::Off);
    assert_eq!(act(&spec, "vm1", PowerAction::BootdevPxe, &settings).await.unwrap().boot_device, Some(BootDevice::Pxe));
    let error = act(&spec, "vm1", PowerAction::SoftOff, &settings).await;
    // Off already: nothing to send, so the missing soft_off template does not matter.
    assert!(error.is_ok(), "{error:?}");
    std::fs::write(directory.path().join("vm1"), "running\n").unwrap();
    let error = act(&spec, "vm1", PowerAction::SoftOff, &settings).await.unwrap_err();
    assert_eq!(error.kind(), PowerErrorKind::Unsupported, "{error}");
    // An outlet cannot inject a command: it is quoted.
    let error = act(&spec, "vm1; touch pwned", PowerAction::Status, &settings).await.unwrap_err();
    assert_eq!(error.kind(), PowerErrorKind::Rejected, "{error}");
    assert!(!std::path::Path::new("pwned").exists() && !directory.path().join("pwned").exists());
}

#[tokio::test]
async fn ssh_template_failures_are_classified_and_bounded() {
    let directory = tempfile::tempdir().unwrap();
    let denied = lab_spec(
        directory.path(),
        serde_json::json!({"status": "echo 'virt@lab: Permission denied (publickey).' >&2; exit 255"}),
    );
    let error = act(&denied, "", PowerAction::Status, &settings()).await.unwrap_err();
    assert_eq!(error.kind(), PowerErrorKind::AuthFailed, "{error}");
    let refused = lab_spec(
        directory.path(),
        serde_json::json!({"status": "echo 'ssh: connect to host lab port 22: Connection refused' >&2; exit 255"}),
    );
    assert_eq!(
        act(&refused, "", PowerAction::Status, &settings()).await.unwrap_err().kind(),
        PowerErrorKind::Unreachable
    );
    let hung = lab_spec(directory.path(), serde_json::json!({"status": "sleep 60"}));
    let mut short = settings();
    short.command_timeout = std::time::Duration::from_secs(1);
    let started = Instant::now();
    let error = act(&hung, "", PowerAction::Status, &short).await.unwrap_err();
    eprintln!("ssh hung command (1 s limit): {:?} after {:?}", error.kind(), started.elapsed());
    assert_eq!(error.kind(), PowerErrorKind::TimedOut, "{error}");
}
