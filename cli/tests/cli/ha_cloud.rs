//! The HA core end to end against the real test cloud (../shared/openstack-env: Keystone,
//! Nova with fake computes, Placement) and real BMC emulators (../shared/bmc-sim) whose power
//! actions kill and start those computes (openstack-env/bmc-link.sh).
//!
//! Three nova-compute hosts of the test's own (`aos-ha-e2e-N`, so colleagues' hosts are never
//! touched), 20 servers on the second one, MariaDB. Phases, in order:
//! 1. flap: a compute killed and started again inside the debounce window → nothing happens;
//! 2. storm: two hosts down with `max_down_hosts = 1` → nothing evacuated, an alarm;
//! 3. isolation: the host stops reporting to Nova but its state file, fresh on its storage,
//!    shows its servers running → nothing evacuated, the host is not powered off;
//! 4. failure: the host's compute killed with two controllers running (`all-in-one`, beat and
//!    worker each); the controller executing the recovery is SIGKILLed after its first
//!    evacuation; the other finishes. The host is fenced through its BMC before anything is
//!    evacuated, every server ends on another host in its prior state (a priority-0 server
//!    stays), and Nova's migration records show each server evacuated exactly once.
//!
//! Phases 1–3 drive the tracker's rounds from the test (so the debounce window is exact);
//! phase 4 is the daemons on their own. Timings are printed (`--nocapture`), not asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_db::entity::NodeState;
use aos_db::testing::TestDatabase;
use aos_ha::{OpenStackCloud, TrackerRules, tracker_round};
use aos_jobs::{JobRunner, ProcessOutcome};
use aos_openstack::testing::{
    Cleanup, admin_client, eventually, install_crypto_provider, osenv_dir, osenv_state_dir, tiny_image_and_nano_flavor,
    unique_name,
};
use aos_openstack::{MigrationFilter, MigrationType, NewServer, OpenStackClient, OpenStackError, ServiceState};

use crate::support::BIN;

const HOSTS: [&str; 4] = ["aos-ha-e2e-1", "aos-ha-e2e-2", "aos-ha-e2e-3", "aos-ha-e2e-4"];
const VICTIM: &str = "aos-ha-e2e-2";
/// Powered off and disabled: the victim's reserve host.
const RESERVE: &str = "aos-ha-e2e-4";
const RESERVE_BOOT_MAC: &str = "52:54:00:e2:e0:04";
const SERVERS: usize = 20;
const IPMI_BASE_PORT: u16 = 9201;
const REDFISH_PORT: u16 = 9280;
const BMC_PASSWORD: &str = "Bmc-s1m-S3cret";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `compute.sh VERB HOST` for our hosts: the victim and its reserve with room for the 20
/// servers (4 GiB), the two others nearly full (640 MiB, 128 MiB after Nova's reserve), so the
/// victim's aggregate cannot hold its servers without the reserve host.
fn compute(verb: &str, host: &str) {
    let ram = if host == VICTIM || host == RESERVE { 4096 } else { 640 };
    if let Err(error) = aos_openstack::testing::compute_sh_with_ram(verb, host, ram) {
        panic!("{error}");
    }
}

/// The BMC emulators of our hosts, linked to the cloud: powering one off kills its compute.
fn ensure_bmcs() -> PathBuf {
    let hook =
        format!("env OSENV_STATE_DIR={} {}", osenv_state_dir().display(), osenv_dir().join("bmc-link.sh").display());
    let script = repo().join("scripts/ensure-bmc-sim.sh");
    let environment = [
        ("AOS_BMC_SIM_HOSTS", HOSTS.join(" ")),
        ("AOS_BMC_SIM_IPMI_PORT", IPMI_BASE_PORT.to_string()),
        ("AOS_BMC_SIM_REDFISH_PORT", REDFISH_PORT.to_string()),
        ("AOS_BMC_SIM_POWER_HOOK", hook),
        ("AOS_BMC_SIM_PASSWORD", BMC_PASSWORD.to_owned()),
    ];
    let ensure = || {
        let status = std::process::Command::new(&script)
            .arg("ha-e2e")
            .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .expect("run scripts/ensure-bmc-sim.sh");
        assert!(status.success(), "the BMC emulators of the HA test did not start");
    };
    ensure();
    let output = std::process::Command::new(&script).args(["--print-run-dir", "ha-e2e"]).output().expect("run dir");
    let run_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    // An instance left by an earlier version of this test may serve other hosts: restart it.
    let table = std::fs::read_to_string(run_dir.join("hosts.tsv")).unwrap_or_default();
    if HOSTS.iter().any(|host| !table.lines().any(|line| line.split('\t').next() == Some(host))) {
        let _ = std::process::Command::new(&script).args(["--down", "ha-e2e"]).status();
        ensure();
    }
    run_dir
}

fn ipmi_port(run_dir: &Path, host: &str) -> u16 {
    let table = std::fs::read_to_string(run_dir.join("hosts.tsv")).expect("hosts.tsv");
    table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|fields| fields[0] == host)
        .map(|fields| fields[2].parse().expect("port"))
        .unwrap_or_else(|| panic!("{host} not in the bmc-sim instance"))
}

async fn nova_state(client: &OpenStackClient, host: &str) -> Option<ServiceState> {
    client.compute_services().await.ok()?.into_iter().find(|s| s.host == host).map(|s| s.state)
}

async fn wait_nova(client: &OpenStackClient, host: &str, want: ServiceState) {
    eventually(&format!("Nova reports {host} {want:?}"), Duration::from_secs(120), Duration::from_secs(1), || async {
        let state = nova_state(client, host).await;
        Ok((state == Some(want)).then_some(()))
    })
    .await;
}

async fn node_state(db: &aos_db::DatabaseConnection, host: &str) -> NodeState {
    aos_db::find_node(db, host).await.expect("read node").expect("node").state
}

fn rules() -> TrackerRules {
    TrackerRules { mutex: 3, mutex_up: 1, max_down_hosts: 1, allow_evacuate_host: true, deny_evacuate: BTreeSet::new() }
}

async fn round(db: &aos_db::DatabaseConnection, cloud: &OpenStackCloud) -> aos_ha::RoundReport {
    tracker_round(db, cloud, &rules(), None, "e2e-test").await.expect("tracker round")
}

async fn evacuations_since(
    client: &OpenStackClient,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<aos_openstack::Migration> {
    client
        .migrations(&MigrationFilter {
            host: Some(VICTIM.to_owned()),
            migration_type: Some(MigrationType::Evacuation),
            changes_since: Some(since),
            ..MigrationFilter::default()
        })
        .await
        .expect("list migrations")
        .into_iter()
        .filter(|migration| migration.source_compute.as_deref() == Some(VICTIM))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ha_end_to_end_on_the_real_cloud_with_real_bmcs() {
    install_crypto_provider();
    let client = admin_client().await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let database = TestDatabase::mysql().await.expect("test database");
    let db = database.connect_migrated().await.expect("migrated database");
    let server_ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let cleanup_ids = Arc::clone(&server_ids);
    let aggregate_name = unique_name("aos-ha-e2e-aggregate");
    let cleanup_aggregate = aggregate_name.clone();
    let _cleanup = Cleanup::new(&client, move |client| async move {
        let ids = cleanup_ids.lock().unwrap().clone();
        aos_openstack::testing::delete_servers(&client, &ids).await;
        if let Ok(aggregates) = client.aggregates().await {
            for aggregate in aggregates.into_iter().filter(|a| a.name == cleanup_aggregate) {
                for host in &aggregate.hosts {
                    let _ = client.aggregate_remove_host(aggregate.id, host).await;
                }
                let _ = client.delete_aggregate(aggregate.id).await;
            }
        }
        for host in HOSTS {
            // A compute must run for Nova to close its evacuations, then it can be un-forced.
            compute("start", host);
        }
        for host in HOSTS {
            if let Some(service) = aos_openstack::testing::compute_service(&client, host).await {
                let _ = eventually("un-forced", Duration::from_secs(90), Duration::from_secs(2), || async {
                    match client.set_forced_down(&service.id, false).await {
                        Ok(_) => Ok(Some(())),
                        Err(error) => Err(error.to_string()),
                    }
                })
                .await;
            }
            aos_openstack::testing::remove_own_compute(&client, host).await;
        }
    });

    // --- the hosts, their BMCs (powered on), and the nodes of this test only -------------
    for host in HOSTS {
        compute("start", host);
    }
    for host in HOSTS {
        aos_openstack::testing::start_own_compute(&client, host).await;
    }
    let bmc_run_dir = ensure_bmcs();
    let added = aos_ha::cloud::sync_nodes_from(
        &db,
        &OpenStackCloud::new(client.clone()),
        |host| HOSTS.contains(&host),
        "e2e-test",
    )
    .await
    .expect("nodes");
    assert_eq!(added.added.len(), HOSTS.len(), "{added:?}");
    let key_file = scratch.path().join("power.key");
    aos_power::Keyring::generate_file(&key_file).expect("key");
    let keyring = aos_power::Keyring::load(&key_file).expect("keyring");
    for host in HOSTS {
        let device = format!("bmc-{host}");
        aos_power::create_device(
            &db,
            &keyring,
            aos_power::NewPowerDevice {
                name: device.clone(),
                driver: aos_power::DriverKind::Ipmi,
                address: "127.0.0.1".into(),
                port: Some(ipmi_port(&bmc_run_dir, host)),
                username: Some("admin".into()),
                password: Some(aos_power::Secret::new(BMC_PASSWORD.to_owned())),
                options: serde_json::json!({}),
            },
        )
        .await
        .expect("power device");
        aos_power::init_node(&db, host, &device, "").await.expect("binding");
        let node = aos_db::find_node(&db, host).await.unwrap().unwrap();
        let settings = aos_power::PowerSettings {
            command_timeout: Duration::from_secs(10),
            ipmi_retries: 1,
            ipmi_retry_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(500),
            verify_timeout: Duration::from_secs(30),
        };
        let on = aos_power::run_node_operation(
            &db,
            &keyring,
            node.id,
            aos_power::PowerAction::On,
            "e2e-test",
            None,
            &settings,
        )
        .await
        .expect("BMC power on");
        assert_eq!(on.state, aos_power::PowerState::On);
    }

    // --- the victim and its two neighbours in one aggregate; the reserve powered off --------
    let aggregate = client.create_aggregate(&aggregate_name, None).await.expect("aggregate");
    for host in &HOSTS[..3] {
        client.aggregate_add_host(aggregate.id, host).await.expect("aggregate host");
    }
    // The reserve boots over PXE: a pxelinux.cfg file for its MAC and the BMC's boot device.
    let reserve_mac: aos_power::MacAddress = RESERVE_BOOT_MAC.parse().unwrap();
    aos_ha::reserve::add(&db, RESERVE, VICTIM, 10, Some(reserve_mac), "e2e-test").await.expect("reserve binding");
    let reserve_service = aos_openstack::testing::compute_service(&client, RESERVE).await.expect("reserve service");
    client.disable_service(&reserve_service.id, "aos-ha e2e: standby").await.expect("disable the reserve");
    let reserve_id = aos_db::find_node(&db, RESERVE).await.unwrap().unwrap().id;
    let power_settings = aos_power::PowerSettings {
        command_timeout: Duration::from_secs(10),
        ipmi_retries: 1,
        ipmi_retry_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(500),
        verify_timeout: Duration::from_secs(30),
    };
    aos_power::run_node_operation(
        &db,
        &keyring,
        reserve_id,
        aos_power::PowerAction::Off,
        "e2e-test",
        None,
        &power_settings,
    )
    .await
    .expect("reserve powered off");
    wait_nova(&client, RESERVE, ServiceState::Down).await;

    // --- 20 servers on the victim: priorities 10, 0 (stays), default; two stopped ---------
    let (image_id, flavor_id) = tiny_image_and_nano_flavor(&client).await;
    let mut planned = Vec::new();
    for index in 0..SERVERS {
        let priority = match index {
            0 | 1 => Some("10"),
            2 => Some("0"),
            _ => None,
        };
        let new_server = NewServer {
            name: unique_name(&format!("aos-ha-e2e-{index}")),
            image_id: image_id.clone(),
            flavor_id: flavor_id.clone(),
            host: Some(VICTIM.to_owned()),
            metadata: priority.map(|p| (aos_ha::RECOVERY_PRIORITY_KEY.to_owned(), p.to_owned())).into_iter().collect(),
            ..NewServer::default()
        };
        let id =
            eventually("server accepted on the victim", Duration::from_secs(90), Duration::from_secs(2), || async {
                match client.create_server(&new_server).await {
                    Ok(id) => Ok(Some(id)),
                    Err(error @ OpenStackError::BadRequest { .. }) => Err(error.to_string()),
                    Err(error) => panic!("boot: {error}"),
                }
            })
            .await;
        server_ids.lock().unwrap().push(id.clone());
        planned.push((id, priority));
    }
    for (id, _) in &planned {
        aos_openstack::testing::wait_for_status(&client, id, "ACTIVE").await;
    }
    let stopped: BTreeSet<String> = planned[3..5].iter().map(|(id, _)| id.clone()).collect();
    for id in &stopped {
        client.stop_server(id).await.expect("stop");
    }
    for id in &stopped {
        aos_openstack::testing::wait_for_status(&client, id, "SHUTOFF").await;
    }
    let pinned = planned[2].0.clone();
    let cloud = OpenStackCloud::new(client.clone());

    // --- 1. flap inside the debounce window ---------------------------------------------
    compute("kill", "aos-ha-e2e-1");
    wait_nova(&client, "aos-ha-e2e-1", ServiceState::Down).await;
    round(&db, &cloud).await;
    assert_eq!(node_state(&db, "aos-ha-e2e-1").await, NodeState::Suspect);
    compute("start", "aos-ha-e2e-1");
    wait_nova(&client, "aos-ha-e2e-1", ServiceState::Up).await;
    let report = round(&db, &cloud).await;
    assert!(report.recoveries.is_empty());
    assert_eq!(node_state(&db, "aos-ha-e2e-1").await, NodeState::Up, "back up: the flap is forgotten");
    assert!(aos_ha::store::list_tasks(&db, 10, None).await.unwrap().is_empty(), "a flap starts no recovery");

    // --- 2. storm guard: two hosts down, max_down_hosts = 1 ------------------------------
    compute("kill", "aos-ha-e2e-1");
    compute("kill", "aos-ha-e2e-3");
    wait_nova(&client, "aos-ha-e2e-1", ServiceState::Down).await;
    wait_nova(&client, "aos-ha-e2e-3", ServiceState::Down).await;
    for _ in 0..4 {
        let report = round(&db, &cloud).await;
        assert!(report.recoveries.is_empty(), "storm guard: no recovery ({report:?})");
    }
    assert_eq!(node_state(&db, "aos-ha-e2e-1").await, NodeState::Down);
    assert_eq!(node_state(&db, "aos-ha-e2e-3").await, NodeState::Down);
    let alarms = aos_ha::store::open_alarms(&db).await.unwrap();
    assert!(alarms.iter().any(|alarm| alarm.kind == "storm_guard"), "{alarms:?}");
    assert!(aos_ha::store::list_tasks(&db, 10, None).await.unwrap().is_empty());
    compute("start", "aos-ha-e2e-1");
    compute("start", "aos-ha-e2e-3");
    wait_nova(&client, "aos-ha-e2e-1", ServiceState::Up).await;
    wait_nova(&client, "aos-ha-e2e-3", ServiceState::Up).await;
    round(&db, &cloud).await;
    assert_eq!(node_state(&db, "aos-ha-e2e-1").await, NodeState::Up);
    assert_eq!(node_state(&db, "aos-ha-e2e-3").await, NodeState::Up);

    // --- 3. isolation: Nova loses the victim, its state file says it runs ----------------
    let storage_dir = scratch.path().join("nfs");
    std::fs::create_dir_all(&storage_dir).unwrap();
    aos_storage::create_storage(&db, "e2e-nfs", storage_dir.to_str().unwrap()).await.expect("storage");
    aos_storage::bind_node(&db, VICTIM, "e2e-nfs").await.expect("bind storage");
    let running: Vec<String> = planned.iter().map(|(id, _)| id.clone()).filter(|id| !stopped.contains(id)).collect();
    let writer_dir = storage_dir.clone();
    let writer = tokio::spawn(async move {
        // What the node agent does on a live node: rewrite its state file every second.
        loop {
            let instances = running
                .iter()
                .map(|id| aos_storage::InstanceEntry { id: id.clone(), state: aos_storage::InstanceState::Running })
                .collect();
            let _ = aos_storage::write_state_file(&writer_dir, &aos_storage::StateFile::new(VICTIM, instances)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let phase_started = chrono::Utc::now();
    compute("kill", VICTIM);
    wait_nova(&client, VICTIM, ServiceState::Down).await;
    let mut started = Vec::new();
    for _ in 0..3 {
        started.extend(round(&db, &cloud).await.to_publish);
    }
    assert_eq!(started.len(), 1, "the victim is confirmed down and a recovery starts");
    let text = format!(
        "[power]\ncredential_key_file = {}\n[extra_availability_check]\nenabled = True\ndelay = 1\nattempts = 2\n",
        key_file.display()
    );
    let mut config = aos_config::load_from_str(&[("e2e.conf", text.as_str())]).expect("config").config;
    config.host_tasks.prioritized_evacuation_timeout = Duration::from_secs(60);
    let recovery = aos_ha::Recovery {
        db: db.clone(),
        cloud: Arc::new(OpenStackCloud::new(client.clone())),
        fencer: Arc::new(aos_ha::PowerFencer::from_config(db.clone(), &config)),
        state_files: Arc::new(aos_ha::StorageStateFiles::new(db.clone())),
        settings: aos_ha::RecoverySettings::from_config(&config),
    };
    let queue = aos_testkit::test_job_queue(&database, &db).await.expect("queue");
    let runner = aos_ha::register_tasks(JobRunner::new(db.clone(), queue.clone(), "worker@e2e-test", 1), recovery);
    assert_eq!(runner.process_one(started[0]).await.expect("run"), ProcessOutcome::Succeeded);
    let (task, _) = aos_ha::store::task_with_steps(&db, &started[0].to_string()).await.unwrap().unwrap();
    assert_eq!(task.result.as_ref().unwrap()["outcome"], "withheld", "{:?}", task.result);
    assert!(evacuations_since(&client, phase_started).await.is_empty(), "an isolated host is not evacuated");
    let ipmi = std::fs::read_to_string(bmc_run_dir.join("ipmi").join(VICTIM).join("power")).unwrap_or_default();
    assert!(ipmi.trim() != "off", "an isolated host is not powered off (BMC power: {ipmi:?})");
    writer.abort();
    compute("start", VICTIM);
    wait_nova(&client, VICTIM, ServiceState::Up).await;
    round(&db, &cloud).await;
    assert_eq!(node_state(&db, VICTIM).await, NodeState::Up);
    queue.close().await;

    // --- 4. failure with two controllers; the one recovering is SIGKILLed ----------------
    let pxe_dir = scratch.path().join("pxelinux.cfg");
    std::fs::create_dir_all(&pxe_dir).unwrap();
    let base = aos_testkit::test_config(
        &database,
        &format!(
            "[keystone_authtoken]\nauth_url = {}\nusername = admin\npassword = admin\nproject_name = admin\ninterface = public\n\n\
             [node_sync]\nenabled = False\n\n[node_tracker]\nloop_time = 1\nmutex = 3\nmutex_up = 1\nmax_down_hosts = 1\n\
             allow_host_auto_power_off = True\nhost_restart_timeout = 180\n\n\
             [extra_availability_check]\nenabled = True\ndelay = 1\nattempts = 1\n\n\
             [host_tasks]\nprioritized_evacuation_timeout = 90\nretries_wait_for_vm_status = 120\n\n\
             [power]\ncredential_key_file = {}\nipmi_retry_timeout = 2\n\n[pxe]\nconf_dir = {}\n",
            aos_openstack::testing::auth_url(),
            key_file.display(),
            pxe_dir.display()
        ),
    )
    .expect("config");
    let base_file = scratch.path().join("base.conf");
    std::fs::write(&base_file, base).unwrap();
    let fast_file = scratch.path().join("fast-takeover.conf");
    std::fs::write(&fast_file, "[worker]\ntask_stale_after = 6\n").unwrap();
    let spawn = |name: &str| {
        let log = std::fs::File::create(scratch.path().join(format!("{name}.log"))).unwrap();
        tokio::process::Command::new(BIN)
            .args(["--no-default-config-files", "--config-file"])
            .arg(&base_file)
            .arg("--config-file")
            .arg(&fast_file)
            .args(["all-in-one", "--api-port", "0"])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start a controller")
    };
    let mut controllers = BTreeMap::new();
    for name in ["ctl-a", "ctl-b"] {
        let child = spawn(name);
        controllers.insert(child.id().expect("pid"), (name.to_owned(), child));
    }
    let logs = |scratch: &Path| -> String {
        ["ctl-a", "ctl-b"]
            .iter()
            .map(|name| std::fs::read_to_string(scratch.join(format!("{name}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    // Both controllers up and tracking (their beat judges the victim up).
    tokio::time::sleep(Duration::from_secs(5)).await;

    let killed_at = Instant::now();
    let killed_utc = chrono::Utc::now();
    compute("kill", VICTIM);
    // The recovery task of this incident, once its first evacuation is recorded.
    let (task_id, holder) = eventually(
        "a recovery with one evacuation done",
        Duration::from_secs(180),
        Duration::from_millis(200),
        || async {
            let tasks = aos_ha::store::list_tasks(&db, 10, None).await.map_err(|e| e.to_string())?;
            let Some(task) =
                tasks.into_iter().find(|task| task.created_at >= killed_utc - chrono::Duration::seconds(2))
            else {
                return Err(format!("no task yet; node {:?}", node_state(&db, VICTIM).await));
            };
            let (task, steps) =
                aos_ha::store::task_with_steps(&db, &task.id).await.map_err(|e| e.to_string())?.unwrap();
            let evacuated = steps
                .iter()
                .any(|step| step.name == "evacuate" && step.state == aos_db::entity::TaskStepState::Succeeded);
            Ok(evacuated.then(|| (task.id.clone(), task.claimed_by.clone().unwrap_or_default())))
        },
    )
    .await;
    let first_evacuation = killed_at.elapsed();
    // SIGKILL the controller whose worker holds the task (identities end with the pid).
    let victim_pid = *controllers
        .keys()
        .find(|pid| holder.contains(&format!(":{pid}:")))
        .unwrap_or_else(|| panic!("no controller holds the task (claimed by {holder:?})"));
    let (name, mut child) = controllers.remove(&victim_pid).unwrap();
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    eprintln!("SIGKILLed {name} (pid {victim_pid}) holding task {task_id} after its first evacuation");

    let finished = eventually(
        "the other controller finishes the recovery",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let (task, _) = aos_ha::store::task_with_steps(&db, &task_id).await.map_err(|e| e.to_string())?.unwrap();
            match task.state {
                aos_db::entity::TaskState::Succeeded => Ok(Some(task)),
                state if state.is_final() => {
                    panic!("recovery ended {state}: {:?}\n{}", task.error, logs(scratch.path()))
                }
                state => Err(format!("task {state}, node {}", node_state(&db, VICTIM).await)),
            }
        },
    )
    .await;
    assert_eq!(finished.result.as_ref().unwrap()["outcome"], "evacuated", "{:?}", finished.result);
    let victim_id = aos_db::find_node(&db, VICTIM).await.unwrap().unwrap().id;
    let evacuated_at = aos_db::node_history(&db, victim_id, 500)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.to_state.as_deref() == Some("evacuated") && event.occurred_at >= killed_utc)
        .map(|event| event.occurred_at)
        .min()
        .expect("the victim reached evacuated");

    // Every server but the pinned one is on another host, in its prior state.
    for (id, _) in &planned {
        let server = client.server(id).await.expect("server");
        if *id == pinned {
            assert_eq!(server.host.as_deref(), Some(VICTIM), "the priority-0 server stays");
            continue;
        }
        assert_ne!(server.host.as_deref(), Some(VICTIM), "{} still on the victim", server.name);
        let expected = if stopped.contains(id) { "SHUTOFF" } else { "ACTIVE" };
        assert_eq!(server.status, expected, "{} is {}", server.name, server.status);
    }
    // Exactly one evacuation per server, none for the pinned one.
    let evacuations = evacuations_since(&client, killed_utc - chrono::Duration::seconds(5)).await;
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for migration in &evacuations {
        *per_server.entry(migration.instance_uuid.clone()).or_default() += 1;
    }
    assert_eq!(per_server.len(), SERVERS - 1, "{per_server:?}");
    assert!(per_server.values().all(|count| *count == 1), "each server evacuated exactly once: {per_server:?}");
    assert!(!per_server.contains_key(&pinned));
    // Fenced through the BMC before the first evacuation.
    let history =
        aos_db::node_history(&db, aos_db::find_node(&db, VICTIM).await.unwrap().unwrap().id, 500).await.unwrap();
    let at = |kind: &str, to: Option<&str>| {
        history
            .iter()
            .filter(|event| event.kind == kind && (to.is_none() || event.to_state.as_deref() == to))
            .map(|event| event.occurred_at)
            .min()
    };
    let fenced = at("state_changed", Some("fenced")).expect("the victim was fenced");
    let evacuating = at("state_changed", Some("evacuating")).expect("evacuating");
    let confirmed = history
        .iter()
        .filter(|event| event.to_state.as_deref() == Some("down") && event.occurred_at >= killed_utc)
        .map(|event| event.occurred_at)
        .min()
        .expect("down confirmed");
    assert!(fenced <= evacuating, "fenced before evacuating");
    // The BMC was asked to power the victim off (the fence), then on (the restart).
    let events = std::fs::read_to_string(bmc_run_dir.join("ipmi").join(VICTIM).join("events")).unwrap_or_default();
    let actions: Vec<&str> = events.lines().filter_map(|line| line.split_whitespace().nth(1)).collect();
    let off = actions.iter().rposition(|action| *action == "off").expect("the BMC powered the victim off");
    // `allow_host_auto_power_off`: the host is powered on again, cleans up, is un-forced and
    // returns to service (the tracker brings it up).
    eventually("the victim back in service", Duration::from_secs(240), Duration::from_secs(1), || async {
        let state = node_state(&db, VICTIM).await;
        match state {
            NodeState::Up => Ok(Some(())),
            other => Err(format!("node {other}")),
        }
    })
    .await;
    let back_in_service = killed_at.elapsed();
    let events = std::fs::read_to_string(bmc_run_dir.join("ipmi").join(VICTIM).join("events")).unwrap_or_default();
    let actions: Vec<&str> = events.lines().filter_map(|line| line.split_whitespace().nth(1)).collect();
    assert!(actions[off..].contains(&"on"), "powered on after the fence: {actions:?}");
    let service = aos_openstack::testing::compute_service(&client, VICTIM).await.expect("victim service");
    assert!(!service.forced_down, "forced_down cleared once its compute cleaned up");
    // Capacity was short in the victim's aggregate: its reserve was powered on through its
    // BMC, came up in Nova, was enabled and joined the aggregate before the evacuations.
    assert_eq!(node_state(&db, RESERVE).await, NodeState::Up, "the reserve host is in service");
    let reserve = aos_openstack::testing::compute_service(&client, RESERVE).await.expect("reserve service");
    assert_eq!(reserve.status, aos_openstack::ServiceStatus::Enabled);
    let members = client.aggregates().await.unwrap().into_iter().find(|a| a.id == aggregate.id).unwrap().hosts;
    assert!(members.iter().any(|host| host == RESERVE), "{members:?}");
    let reserve_events =
        std::fs::read_to_string(bmc_run_dir.join("ipmi").join(RESERVE).join("events")).unwrap_or_default();
    assert!(reserve_events.lines().last().is_some_and(|line| line.ends_with(" on")), "{reserve_events}");
    let reserve_actions: Vec<&str> =
        reserve_events.lines().map(|line| line.split_once(' ').map_or(line, |(_, a)| a)).collect();
    // ipmi_sim reports the PXE boot device as `network`.
    let pxe_at = reserve_actions
        .iter()
        .rposition(|action| *action == "bootdev pxe" || *action == "bootdev network")
        .expect("PXE boot set on its BMC");
    assert_eq!(reserve_actions.last(), Some(&"on"), "then powered on: {reserve_actions:?}");
    assert!(pxe_at + 1 == reserve_actions.len() - 1, "boot device set right before power on: {reserve_actions:?}");
    let pxe_file = pxe_dir.join(reserve_mac.pxelinux_file_name());
    assert!(!pxe_file.exists(), "its pxelinux.cfg file is removed once it runs (next boot from disk)");
    let pxe_ops = aos_power::recent_operations(&db, reserve_id, 20).await.unwrap();
    assert!(
        pxe_ops.iter().any(|op| op.operation == "bootdev_pxe" && op.result.as_deref() == Some("succeeded")),
        "{pxe_ops:?}"
    );
    let reserve_up = aos_db::node_history(&db, reserve_id, 100)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.to_state.as_deref() == Some("up") && event.occurred_at >= killed_utc)
        .map(|event| event.occurred_at)
        .min()
        .expect("the reserve came up");
    assert!(reserve_up <= evacuating || reserve_up <= evacuated_at, "the reserve was up before the evacuation ended");
    let since = |at: chrono::DateTime<chrono::Utc>| (at - killed_utc).num_milliseconds() as f64 / 1000.0;
    eprintln!(
        "HA e2e figures: kill -> down confirmed {:.1}s, -> fenced {:.1}s, -> first evacuation done {:.1}s, \
         -> reserve host in service {:.1}s, -> all {} servers back (with one controller SIGKILLed) {:.1}s, \
         -> host back in service {:.1}s",
        since(confirmed),
        since(fenced),
        first_evacuation.as_secs_f64(),
        since(reserve_up),
        SERVERS - 1,
        since(evacuated_at),
        back_in_service.as_secs_f64()
    );
    for (_, (_, mut child)) in controllers {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    aos_testkit::delete_test_queues(&database).await;
    db.close().await.ok();
    database.cleanup().await;
}
