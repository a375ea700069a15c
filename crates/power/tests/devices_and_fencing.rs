//! Power devices, bindings, recorded operations and fencing, on a fresh MariaDB database and
//! a fresh SQLite file each, against the BMC emulators (aos-pw-5 for MariaDB, aos-pw-6 for
//! SQLite, so both backends run in parallel without sharing a host).

mod support;

use aos_db::entity::{node, node_event, power_operation};
use aos_db::{DatabaseConnection, DbBackend};
use aos_power::{
    DriverKind, Keyring, NewPowerDevice, NodeOperationError, PowerAction, PowerErrorKind, PowerState, Secret,
    StoreError,
};
use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement};

fn keyring() -> Keyring {
    Keyring::from_key_bytes([42; 32], "test key")
}

fn fence_host(db: &DatabaseConnection) -> support::SimHost {
    match db.get_database_backend() {
        DbBackend::MySql => support::host("aos-pw-5"),
        _ => support::host("aos-pw-6"),
    }
}

async fn add_node(db: &DatabaseConnection, name: &str) -> i64 {
    let now = aos_db::db_time(Utc::now());
    node::ActiveModel {
        name: Set(name.to_owned()),
        state: Set(node::NodeState::Up),
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
    .insert(db)
    .await
    .expect("insert node")
    .id
}

fn ipmi_device(name: &str, port: u16, password: &str) -> NewPowerDevice {
    NewPowerDevice {
        name: name.into(),
        driver: DriverKind::Ipmi,
        address: "127.0.0.1".into(),
        port: Some(port),
        username: Some("admin".into()),
        password: Some(Secret::new(password.into())),
        options: serde_json::json!({"timeout": 8, "retries": 1, "retry_timeout": 1}),
    }
}

async fn operations(db: &DatabaseConnection, node_id: i64) -> Vec<power_operation::Model> {
    power_operation::Entity::find()
        .filter(power_operation::Column::NodeId.eq(node_id))
        .all(db)
        .await
        .expect("read power_operations")
}

async fn fence_node_powers_off_verifies_and_leaves_a_finished_record(db: &DatabaseConnection) -> anyhow::Result<()> {
    aos_db::migrate_to(db, None).await?;
    let host = fence_host(db);
    let keyring = keyring();
    let settings = support::settings();
    aos_power::create_device(db, &keyring, ipmi_device("bmc-fence", host.ipmi_port, &support::password())).await?;
    let node_id = add_node(db, &host.name).await;
    assert!(!aos_power::has_power_device(db, node_id).await?);
    aos_power::init_node(db, &host.name, "bmc-fence", "").await?;
    assert!(aos_power::has_power_device(db, node_id).await?);

    let on = aos_power::run_node_operation(db, &keyring, node_id, PowerAction::On, "test", None, &settings).await?;
    assert_eq!(on.state, PowerState::On);
    assert_eq!(support::ipmi_power_file(&host.name), "on");

    let report = aos_power::fence_node(db, &keyring, node_id, "worker@test", Some("task-1"), &settings).await?;
    assert_eq!(report.state, PowerState::Off);
    assert!(report.command_sent);
    assert_eq!(support::ipmi_power_file(&host.name), "off", "the BMC is really off");

    let row = power_operation::Entity::find_by_id(report.operation_id).one(db).await?.expect("the fence's row");
    assert_eq!(row.operation, "off");
    assert_eq!(row.result.as_deref(), Some("succeeded"));
    assert!(row.finished_at.is_some() && row.finished_at >= Some(row.requested_at));
    assert_eq!(row.error, None);
    assert_eq!(row.actor, "worker@test");
    assert_eq!(row.task_id.as_deref(), Some("task-1"));
    assert_eq!(row.node_id, Some(node_id));

    let events = node_event::Entity::find().filter(node_event::Column::NodeId.eq(node_id)).all(db).await?;
    let fence_event = events.iter().find(|event| event.kind == "power.fence").expect("a power.fence node event");
    assert!(fence_event.reason.contains("verified off"), "{}", fence_event.reason);
    assert_eq!(fence_event.task_id.as_deref(), Some("task-1"));

    // Fencing a host that is already off succeeds after reading off, sending nothing.
    let again = aos_power::fence_node(db, &keyring, node_id, "worker@test", Some("task-1"), &settings).await?;
    assert_eq!((again.state, again.command_sent), (PowerState::Off, false));
    assert_eq!(operations(db, node_id).await.len(), 3, "on, fence, fence: every operation is recorded");
    Ok(())
}

async fn fence_node_on_an_unreachable_bmc_fails_and_its_record_says_so(db: &DatabaseConnection) -> anyhow::Result<()> {
    aos_db::migrate_to(db, None).await?;
    let keyring = keyring();
    aos_power::create_device(db, &keyring, ipmi_device("bmc-gone", support::closed_port(), &support::password()))
        .await?;
    let node_id = add_node(db, "lost-host").await;
    aos_power::init_node(db, "lost-host", "bmc-gone", "").await?;
    let started = std::time::Instant::now();
    let error =
        aos_power::fence_node(db, &keyring, node_id, "worker@test", None, &support::settings()).await.unwrap_err();
    eprintln!("fence on unreachable BMC failed after {:?}: {error}", started.elapsed());
    assert_eq!(error.power_error_kind(), Some(PowerErrorKind::Unreachable), "{error}");
    let NodeOperationError::Power { operation_id, .. } = error else { panic!("a device error: {error}") };
    let row = power_operation::Entity::find_by_id(operation_id).one(db).await?.expect("row");
    assert_eq!(row.operation, "off");
    assert_eq!(row.result.as_deref(), Some("failed"));
    assert!(row.finished_at.is_some());
    let text = row.error.unwrap_or_default();
    assert!(text.starts_with("unreachable:") && text.contains("bmc-gone"), "{text}");
    let events = node_event::Entity::find().filter(node_event::Column::NodeId.eq(node_id)).all(db).await?;
    assert!(events.iter().any(|event| event.kind == "power.fence" && event.reason.contains("failed")), "{events:?}");
    Ok(())
}

async fn a_node_without_a_power_device_cannot_be_fenced(db: &DatabaseConnection) -> anyhow::Result<()> {
    aos_db::migrate_to(db, None).await?;
    let node_id = add_node(db, "bare-host").await;
    let error = aos_power::fence_node(db, &keyring(), node_id, "t", None, &support::settings()).await.unwrap_err();
    assert!(matches!(error, NodeOperationError::NoPowerDevice { .. }), "{error}");
    let error =
        aos_power::fence_node(db, &keyring(), node_id + 1000, "t", None, &support::settings()).await.unwrap_err();
    assert!(matches!(error, NodeOperationError::NodeNotFound { .. }), "{error}");
    assert!(operations(db, node_id).await.is_empty(), "nothing recorded: nothing was attempted");
    Ok(())
}

async fn device_passwords_are_stored_only_encrypted_and_never_shown(db: &DatabaseConnection) -> anyhow::Result<()> {
    aos_db::migrate_to(db, None).await?;
    let secret = "Pl41n-Text-Never";
    let info = aos_power::create_device(db, &keyring(), ipmi_device("bmc-secret", 623, secret)).await?;
    assert!(info.password_set);
    let json = serde_json::to_string(&info)?;
    assert!(!json.contains(secret) && !format!("{info:?}").contains(secret), "{json}");

    // The raw row, as a database dump would show it.
    let backend = db.get_database_backend();
    let rows = db.query_all_raw(Statement::from_string(backend, "SELECT * FROM power_devices".to_owned())).await?;
    assert_eq!(rows.len(), 1);
    let ciphertext: Vec<u8> = rows[0].try_get("", "secret_ciphertext")?;
    assert!(!ciphertext.windows(secret.len()).any(|window| window == secret.as_bytes()));
    assert!(ciphertext.len() > secret.len(), "nonce and tag are stored with it");
    for column in ["name", "driver", "address", "username", "options"] {
        let value: Option<String> = rows[0].try_get("", column).ok();
        assert!(!value.unwrap_or_default().contains(secret), "{column}");
    }
    // And it opens back for the driver.
    let spec = aos_power::store::device_spec(db, &keyring(), info.id).await?;
    assert_eq!(spec.password.as_ref().map(|p| p.expose().as_str()), Some(secret));
    let wrong_key = Keyring::from_key_bytes([1; 32], "another key");
    let error = aos_power::store::device_spec(db, &wrong_key, info.id).await.unwrap_err();
    assert!(matches!(error, StoreError::Key(_)), "{error}");
    Ok(())
}

async fn node_init_binds_makes_default_and_reads_bulk_files_all_or_nothing(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    aos_db::migrate_to(db, None).await?;
    let keyring = keyring();
    aos_power::create_device(db, &keyring, ipmi_device("bmc-a", 623, "x")).await?;
    let mut pdu = ipmi_device("pdu-1", 623, "y");
    pdu.driver = DriverKind::Ssh;
    pdu.options = serde_json::json!({"commands": {"status": "echo on"}});
    aos_power::create_device(db, &keyring, pdu).await?;
    let node_a = add_node(db, "node-a").await;
    add_node(db, "node-b").await;

    aos_power::init_node(db, "node-a", "bmc-a", "").await?;
    aos_power::init_node(db, "node-a", "pdu-1", "7").await?;
    let bindings = aos_power::node_bindings(db, node_a).await?;
    assert_eq!(bindings.len(), 2);
    assert_eq!(
        (bindings[0].device_name.as_str(), bindings[0].outlet.as_str(), bindings[0].is_default),
        ("pdu-1", "7", true)
    );
    assert!(!bindings[1].is_default, "one default per node");
    aos_power::init_node(db, "node-a", "bmc-a", "").await?;
    let default = aos_power::default_binding(db, node_a).await?.expect("default");
    assert_eq!(default.device_name, "bmc-a");
    assert_eq!(aos_power::node_bindings(db, node_a).await?.len(), 2, "binding twice is a no-op");

    let error = aos_power::init_node(db, "no-node", "bmc-a", "").await.unwrap_err();
    assert!(matches!(error, StoreError::NodeNotFound(_)), "{error}");
    let error = aos_power::init_node(db, "node-a", "no-device", "").await.unwrap_err();
    assert!(matches!(error, StoreError::DeviceNotFound(_)), "{error}");

    let directory = tempfile::tempdir()?;
    let bad = directory.path().join("bad.txt");
    std::fs::write(&bad, "# node device outlet\nnode-b pdu-1 3\nnode-b no-such-device\n")?;
    let error = aos_power::init_nodes_from_file(db, &bad).await.unwrap_err();
    assert!(error.to_string().contains("bad.txt:3:") && error.to_string().contains("no-such-device"), "{error}");
    assert!(aos_power::default_binding(db, node_a + 1).await?.is_none(), "nothing written from a bad file");
    let good = directory.path().join("good.txt");
    std::fs::write(&good, "node-b pdu-1 3   # rack 2\n\nnode-a bmc-a\n")?;
    let made = aos_power::init_nodes_from_file(db, &good).await?;
    assert_eq!(made.len(), 2);
    assert_eq!(aos_power::default_binding(db, node_a + 1).await?.map(|b| b.outlet), Some("3".to_owned()));

    // Removing the default promotes another; a device in use is deleted only with force.
    assert!(aos_power::unbind_node(db, "node-a", "bmc-a", "").await?);
    assert_eq!(aos_power::default_binding(db, node_a).await?.map(|b| b.device_name), Some("pdu-1".to_owned()));
    let error = aos_power::delete_device(db, "pdu-1", false).await.unwrap_err();
    assert!(matches!(error, StoreError::DeviceInUse { .. }), "{error}");
    aos_power::delete_device(db, "pdu-1", true).await?;
    assert!(!aos_power::has_power_device(db, node_a).await?);
    assert_eq!(aos_power::list_devices(db).await?.len(), 1);
    Ok(())
}

async fn bad_devices_are_refused_with_the_reason(db: &DatabaseConnection) -> anyhow::Result<()> {
    aos_db::migrate_to(db, None).await?;
    let keyring = keyring();
    let mut bad_options = ipmi_device("bmc-x", 623, "x");
    bad_options.options = serde_json::json!({"cipher": 3});
    let error = aos_power::create_device(db, &keyring, bad_options).await.unwrap_err();
    assert!(error.to_string().contains("cipher"), "{error}");
    aos_power::create_device(db, &keyring, ipmi_device("bmc-x", 623, "x")).await?;
    let error = aos_power::create_device(db, &keyring, ipmi_device("bmc-x", 623, "x")).await.unwrap_err();
    assert!(matches!(error, StoreError::DeviceExists(_)), "{error}");
    let error = aos_power::create_device(db, &keyring, ipmi_device("bad name", 623, "x")).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidDevice(_)), "{error}");
    Ok(())
}

async fn redfish_boot_pxe_through_a_binding_is_verified_and_recorded(db: &DatabaseConnection) -> anyhow::Result<()> {
    support::install_crypto_provider();
    aos_db::migrate_to(db, None).await?;
    let host = fence_host(db);
    let keyring = keyring();
    aos_power::create_device(
        db,
        &keyring,
        NewPowerDevice {
            name: "redfish-sim".into(),
            driver: DriverKind::Redfish,
            address: "127.0.0.1".into(),
            port: Some(support::REDFISH_PORT),
            username: Some("admin".into()),
            password: Some(Secret::new(support::password())),
            options: serde_json::json!({"scheme": "http"}),
        },
    )
    .await?;
    let node_id = add_node(db, &host.name).await;
    aos_power::init_node(db, &host.name, "redfish-sim", &host.name).await?;
    let settings = support::settings();
    let report =
        aos_power::run_node_operation(db, &keyring, node_id, PowerAction::BootdevPxe, "admin", None, &settings).await?;
    assert_eq!(report.boot_device, Some(aos_power::BootDevice::Pxe));
    let status =
        aos_power::run_node_operation(db, &keyring, node_id, PowerAction::Status, "admin", None, &settings).await?;
    assert!(matches!(status.state, PowerState::On | PowerState::Off));
    // By device and outlet: recorded against the node bound there.
    let by_device = aos_power::run_device_operation(
        db,
        &keyring,
        "redfish-sim",
        &host.name,
        PowerAction::Status,
        "admin",
        None,
        &settings,
    )
    .await?;
    assert_eq!(by_device.node_id, Some(node_id));
    let rows = operations(db, node_id).await;
    assert_eq!(
        rows.iter().map(|row| (row.operation.as_str(), row.result.as_deref())).collect::<Vec<_>>(),
        [("bootdev_pxe", Some("succeeded")), ("status", Some("succeeded")), ("status", Some("succeeded"))]
    );
    Ok(())
}

aos_db::db_test_suite!(
    fence_node_powers_off_verifies_and_leaves_a_finished_record,
    fence_node_on_an_unreachable_bmc_fails_and_its_record_says_so,
    a_node_without_a_power_device_cannot_be_fenced,
    device_passwords_are_stored_only_encrypted_and_never_shown,
    node_init_binds_makes_default_and_reads_bulk_files_all_or_nothing,
    bad_devices_are_refused_with_the_reason,
    redfish_boot_pxe_through_a_binding_is_verified_and_recorded,
);
