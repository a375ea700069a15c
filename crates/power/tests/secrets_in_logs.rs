//! No BMC password in any log line: every event of every target, at TRACE, is captured while
//! devices are created and driven over IPMI and Redfish (successes, wrong passwords, a
//! fence), and searched for the password and its HTTP Basic form.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use aos_db::testing::TestDatabase;
use aos_power::{DriverKind, Keyring, NewPowerDevice, PowerAction, Secret};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for (index, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// current_thread: the subscriber set for this thread sees everything the test runs.
#[tokio::test(flavor = "current_thread")]
async fn no_log_line_holds_a_bmc_password() {
    support::install_crypto_provider();
    let host = support::host("aos-pw-4");
    let password = support::password();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let database = TestDatabase::sqlite().await.expect("sqlite test database");
    let db = database.connect_migrated().await.expect("migrated database");
    let keyring = Keyring::from_key_bytes([9; 32], "test key");
    let settings = support::settings();
    let device = |name: &str, driver, port, password: &str, options| NewPowerDevice {
        name: name.into(),
        driver,
        address: "127.0.0.1".into(),
        port: Some(port),
        username: Some("admin".into()),
        password: Some(Secret::new(password.into())),
        options,
    };
    let node_id = {
        use sea_orm::ActiveModelTrait as _;
        use sea_orm::ActiveValue::Set;
        let now = aos_db::db_time(chrono::Utc::now());
        aos_db::entity::node::ActiveModel {
            name: Set(host.name.clone()),
            state: Set(aos_db::entity::node::NodeState::Up),
            state_changed_at: Set(now),
            nova_forced_down: Set(false),
            evacuation_allowed: Set(true),
            is_reserve: Set(false),
            down_observations: Set(0),
            up_observations: Set(0),
            removed_from_nova: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&db)
        .await
        .expect("node")
        .id
    };
    let http = serde_json::json!({"scheme": "http"});
    for (name, driver, port, secret, options) in [
        ("ipmi-ok", DriverKind::Ipmi, host.ipmi_port, password.as_str(), serde_json::json!({})),
        ("ipmi-wrong", DriverKind::Ipmi, host.ipmi_port, "Wr0ng-Secret-1", serde_json::json!({})),
        ("redfish-ok", DriverKind::Redfish, support::REDFISH_PORT, password.as_str(), http.clone()),
        ("redfish-wrong", DriverKind::Redfish, support::REDFISH_PORT, "Wr0ng-Secret-2", http.clone()),
    ] {
        aos_power::create_device(&db, &keyring, device(name, driver, port, secret, options)).await.expect("create");
    }
    for (device, outlet) in
        [("ipmi-ok", ""), ("ipmi-wrong", ""), ("redfish-ok", "aos-pw-4"), ("redfish-wrong", "aos-pw-4")]
    {
        aos_power::init_node(&db, &host.name, device, outlet).await.expect("bind");
        let result =
            aos_power::run_node_operation(&db, &keyring, node_id, PowerAction::Status, "admin", None, &settings).await;
        assert_eq!(result.is_ok(), device.ends_with("-ok"), "{device}: {result:?}");
        if let Err(error) = result {
            assert!(!error.to_string().contains("Wr0ng-Secret"), "{error}");
        }
    }
    aos_power::init_node(&db, &host.name, "ipmi-ok", "").await.expect("bind");
    // A fence on a read-only host would power it off: use an on (the host starts on).
    aos_power::run_node_operation(&db, &keyring, node_id, PowerAction::On, "admin", None, &settings).await.expect("on");
    db.close().await.expect("close");
    database.cleanup().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).expect("utf-8 logs");
    assert!(logs.contains("power operation succeeded") && logs.contains("power operation failed"), "{logs}");
    assert!(logs.lines().count() > 10, "the capture works: {logs}");
    for secret in [password.as_str(), "Wr0ng-Secret-1", "Wr0ng-Secret-2"] {
        let basic = base64(format!("admin:{secret}").as_bytes());
        for (number, line) in logs.lines().enumerate() {
            assert!(!line.contains(secret), "log line {number} holds a password: {line}");
            assert!(!line.contains(&basic), "log line {number} holds a Basic credential: {line}");
        }
    }
}
