//! `recovery`: how long the recovery of one dead hypervisor takes on the real test cloud
//! (`../shared/openstack-env`: Keystone, Nova with fake computes, Placement), ours against the
//! floor of an operator's script that applies no safety rule.
//!
//! Set-up (both runs): three nova-compute hosts of the bench's own (`aos-bench-1..3`, 4 GiB of
//! RAM each, so colleagues' hosts `fake-N` and the HA test's `aos-ha-e2e-N` are never touched),
//! `--servers` m1.nano servers booted on `aos-bench-2` and ACTIVE; then `compute.sh kill
//! aos-bench-2` (SIGKILL: a power loss as Nova sees it). The kill instant is the one
//! `compute.sh` prints. Every time is measured from it.
//!
//! - **ours**: a fresh MariaDB database (`TestDatabase`) with the three nodes and a real BMC
//!   each (bmc-sim instance `bench`, IPMI on 9301+, Redfish on 9380, its power hook
//!   `openstack-env/bmc-link.sh`, so powering a BMC off kills that compute); the tracker's own
//!   round ([`aos_ha::tracker_round`], what the beat runs) every `--loop-time` with `mutex 3`,
//!   `mutex_up 1`, `max_down_hosts 1`; the task a round records goes straight to the worker's
//!   own runner ([`aos_jobs::JobRunner::process_one`] with [`aos_ha::Recovery`] registered as
//!   the worker does; RabbitMQ delivery, a few ms, is left out). The recovery runs with the
//!   production defaults except the isolation check, which is off (`[extra_availability_check]
//!   enabled = False`): isolation check, claim, fence through the BMC (IPMI power off, verified
//!   off), force-down, plan, evacuation (8 requests in flight), then polls every 2 s until every
//!   server is back. Times come from the recorded `node_events` and `task_steps`.
//! - **floor**: what an operator would do at once, no safety rule: poll `os-services` every
//!   250 ms until Nova says the host is down, force it down, list its servers, send every
//!   evacuation request at once, and wait until all are back.
//!
//! In both runs the bench itself polls the servers (one list call every 500 ms) to see when
//! every one is on another host in its prior state (ACTIVE, no task), the same test for both.
//! Between and after the runs: the dead compute is started again (Nova closes the evacuations),
//! un-forced, the servers deleted; at the end the three computes are removed and the BMCs
//! stopped, also when a run fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_db::entity::{NodeState, TaskStepState};
use aos_db::testing::TestDatabase;
use aos_ha::{OpenStackCloud, TrackerRules, tracker_round};
use aos_jobs::{JobQueue, JobRunner, ProcessOutcome, TaskId};
use aos_openstack::testing::{Cleanup, admin_client, compute_service, osenv_dir, osenv_state_dir, unique_name};
use aos_openstack::{NewServer, OpenStackClient, OpenStackError, ServerFilter, ServiceState};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

const HOSTS: [&str; 3] = ["aos-bench-1", "aos-bench-2", "aos-bench-3"];
const VICTIM: &str = "aos-bench-2";
const BMC_INSTANCE: &str = "bench";
const IPMI_BASE_PORT: u16 = 9301;
const REDFISH_PORT: u16 = 9380;
const BMC_PASSWORD: &str = "Bmc-s1m-S3cret";
/// RAM of our fake hypervisors: room for the servers, below the 16 GiB of the shared `fake-N`.
const FAKE_RAM_MB: u32 = 4096;
/// The broker of the job queue (the tests' RabbitMQ), and the prefix of the bench's queues.
const AMQP_URL_ENV: &str = "AOS_TEST_AMQP_URL";
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2F";
/// How often the floor polls `os-services`, and the bench polls the servers.
const NOVA_POLL: Duration = Duration::from_millis(250);
const SERVERS_POLL: Duration = Duration::from_millis(500);
/// Liveness bounds (not figures).
const RECOVERY_LIMIT: Duration = Duration::from_secs(900);
const SETUP_LIMIT: Duration = Duration::from_secs(180);

#[derive(clap::Args)]
pub struct RecoveryArgs {
    /// Servers on the host that dies.
    #[arg(long, default_value_t = 20)]
    servers: usize,
    /// `[node_tracker] loop_time` of our tracker, in seconds.
    #[arg(long = "loop-time", default_value_t = 1.0)]
    loop_time: f64,
    /// Which runs to make.
    #[arg(long, value_enum, default_value_t = Runs::Both)]
    runs: Runs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Runs {
    Both,
    Ours,
    Floor,
}

/// Seconds after the kill, per milestone (`None`: not applicable to that run).
#[derive(Debug, Default, Clone)]
struct Figures {
    nova_down: f64,
    confirmed: f64,
    fenced: Option<f64>,
    forced_down: f64,
    first_evacuation: f64,
    last_evacuation: f64,
    all_back: f64,
    finished: f64,
}

pub fn run(args: RecoveryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.servers > 0, "--servers must be at least 1");
    anyhow::ensure!(args.loop_time > 0.0, "--loop-time must be positive");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: RecoveryArgs) -> anyhow::Result<()> {
    let status = std::process::Command::new(repo().join("scripts/ensure-openstack.sh"))
        .stdout(to_stderr())
        .status()
        .context("run scripts/ensure-openstack.sh")?;
    anyhow::ensure!(status.success(), "the test cloud is not running and could not be started");
    let client = admin_client().await;
    let server_ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let cleanup_ids = Arc::clone(&server_ids);
    // Runs when `measure` returns, also on an error or a panic.
    let _cleanup = Cleanup::new(&client, move |client| async move {
        let ids = cleanup_ids.lock().map(|ids| ids.clone()).unwrap_or_default();
        restore_hosts(&client, &ids).await;
        for host in HOSTS {
            aos_openstack::testing::remove_own_compute(&client, host).await;
        }
        let _ = std::process::Command::new(repo().join("scripts/ensure-bmc-sim.sh"))
            .args(["--down", BMC_INSTANCE])
            .stdout(to_stderr())
            .status();
    });

    for host in HOSTS {
        compute("start", host)?;
    }
    for host in HOSTS {
        aos_openstack::testing::start_own_compute(&client, host).await;
    }
    let (image_id, flavor_id) = aos_openstack::testing::tiny_image_and_nano_flavor(&client).await;
    let nova = nova_timing();

    let mut ours = None;
    let mut floor = None;
    if args.runs != Runs::Floor {
        let bmc_run_dir = ensure_bmcs()?;
        boot(&client, &image_id, &flavor_id, args.servers, &server_ids).await?;
        eprintln!("ours: {} servers ACTIVE on {VICTIM}; killing its compute", args.servers);
        ours = Some(run_ours(&client, &args, &bmc_run_dir, &server_ids).await?);
        let ids = std::mem::take(&mut *server_ids.lock().expect("server ids"));
        restore_hosts(&client, &ids).await;
    }
    if args.runs != Runs::Ours {
        boot(&client, &image_id, &flavor_id, args.servers, &server_ids).await?;
        eprintln!("floor: {} servers ACTIVE on {VICTIM}; killing its compute", args.servers);
        floor = Some(run_floor(&client, &server_ids).await?);
    }
    report(&args, nova, ours.as_ref(), floor.as_ref());
    Ok(())
}

// --- ours ---------------------------------------------------------------------------------

async fn run_ours(
    client: &OpenStackClient,
    args: &RecoveryArgs,
    bmc_run_dir: &Path,
    server_ids: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<Figures> {
    let database = TestDatabase::mysql().await.context("cannot create a MariaDB database")?;
    let amqp_url = std::env::var(AMQP_URL_ENV).unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let prefix = format!("aos-bench-recovery-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let queue = JobQueue::connect_amqp(&amqp_url, &prefix).await.context("cannot open the job queue")?;
    let scratch = tempfile::Builder::new().prefix("aos-bench-recovery-").tempdir()?;
    let result = async {
        let db = database.connect_migrated().await.context("cannot migrate the database")?;
        let result = ours_with(client, args, bmc_run_dir, server_ids, &db, &queue, scratch.path()).await;
        db.close().await?;
        result
    }
    .await;
    if let Err(error) = queue.delete().await {
        eprintln!("cannot delete the bench's job queues {prefix}: {error}");
    }
    queue.close().await;
    database.cleanup().await;
    result
}

async fn ours_with(
    client: &OpenStackClient,
    args: &RecoveryArgs,
    bmc_run_dir: &Path,
    server_ids: &Arc<Mutex<Vec<String>>>,
    db: &aos_db::DatabaseConnection,
    queue: &JobQueue,
    scratch: &Path,
) -> anyhow::Result<Figures> {
    // The nodes, as the beat's node sync records them, each bound to its BMC (powered on).
    let synced = aos_ha::cloud::sync_nodes_from(
        db,
        &aos_ha::OpenStackCloud::new(client.clone()),
        |host| HOSTS.contains(&host),
        "bench",
    )
    .await?;
    anyhow::ensure!(
        synced.added.len() == HOSTS.len(),
        "Nova lists {} of our {} hosts",
        synced.added.len(),
        HOSTS.len()
    );
    let key_file = scratch.join("power.key");
    aos_power::Keyring::generate_file(&key_file)?;
    let keyring = aos_power::Keyring::load(&key_file)?;
    let text = format!(
        "[power]\ncredential_key_file = {}\n\n[extra_availability_check]\nenabled = False\n\n\
         [node_tracker]\nmutex = 3\nmutex_up = 1\nmax_down_hosts = 1\n",
        key_file.display()
    );
    let config = aos_config::load_from_str(&[("bench.conf", text.as_str())])?.config;
    let power_settings = aos_power::PowerSettings::from(&config.power);
    for host in HOSTS {
        let device = format!("bmc-{host}");
        aos_power::create_device(
            db,
            &keyring,
            aos_power::NewPowerDevice {
                name: device.clone(),
                driver: aos_power::DriverKind::Ipmi,
                address: "127.0.0.1".into(),
                port: Some(ipmi_port(bmc_run_dir, host)?),
                username: Some("admin".into()),
                password: Some(aos_power::Secret::new(BMC_PASSWORD.to_owned())),
                options: serde_json::json!({}),
            },
        )
        .await?;
        aos_power::init_node(db, host, &device, "").await?;
        let node = aos_db::find_node(db, host).await?.context("node")?;
        let on = aos_power::run_node_operation(
            db,
            &keyring,
            node.id,
            aos_power::PowerAction::On,
            "bench",
            None,
            &power_settings,
        )
        .await
        .with_context(|| format!("BMC power on of {host}"))?;
        anyhow::ensure!(on.state == aos_power::PowerState::On, "the BMC of {host} is not on: {:?}", on.state);
    }

    let recovery = aos_ha::Recovery {
        db: db.clone(),
        cloud: Arc::new(OpenStackCloud::new(client.clone())),
        fencer: Arc::new(aos_ha::PowerFencer::from_config(db.clone(), &config)),
        state_files: Arc::new(aos_ha::StorageStateFiles::new(db.clone())),
        settings: aos_ha::RecoverySettings::from_config(&config),
    };
    anyhow::ensure!(recovery.settings.isolation.is_none(), "the isolation check should be off");
    let runner = aos_ha::register_tasks(JobRunner::new(db.clone(), queue.clone(), "worker@bench", 1), recovery);
    let rules = TrackerRules {
        mutex: 3,
        mutex_up: 1,
        max_down_hosts: 1,
        allow_evacuate_host: true,
        deny_evacuate: BTreeSet::new(),
    };

    // The beat (tracker rounds) and the worker, in this process.
    let shutdown = CancellationToken::new();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<TaskId>();
    let tracker = {
        let (db, cloud, shutdown) = (db.clone(), OpenStackCloud::new(client.clone()), shutdown.clone());
        let loop_time = Duration::from_secs_f64(args.loop_time);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(loop_time);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                match tracker_round(&db, &cloud, &rules, None, "beat@bench").await {
                    Ok(report) => {
                        for task in report.to_publish {
                            let _ = sender.send(task);
                        }
                    }
                    Err(error) => eprintln!("tracker round failed: {error:#}"),
                }
            }
        })
    };
    let worker = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        while let Some(task) = receiver.recv().await {
            loop {
                match runner.process_one(task).await {
                    Ok(ProcessOutcome::RetryLater { error }) => {
                        eprintln!("recovery task {task}: retry ({error})");
                        tokio::time::sleep(runner.settings().retry_backoff).await;
                    }
                    Ok(outcome) => {
                        outcomes.push(outcome);
                        break;
                    }
                    Err(error) => {
                        outcomes.push(ProcessOutcome::Failed { error: error.to_string() });
                        break;
                    }
                }
            }
        }
        outcomes
    });
    // A few rounds on the healthy cloud first (every node judged up).
    tokio::time::sleep(Duration::from_secs_f64(args.loop_time * 3.0)).await;
    let victim = aos_db::find_node(db, VICTIM).await?.context("victim node")?;
    anyhow::ensure!(victim.state == NodeState::Up, "{VICTIM} is {} before the kill", victim.state);

    let ids = server_ids.lock().expect("server ids").clone();
    let killed = kill(VICTIM)?;
    let watcher = tokio::spawn(watch_back(client.clone(), ids.clone(), killed));
    let started = Instant::now();
    let result = loop {
        let state = aos_db::find_node(db, VICTIM).await?.context("victim node")?.state;
        match state {
            NodeState::Evacuated => break Ok(()),
            NodeState::EvacuationFailed | NodeState::FenceFailed => {
                break Err(anyhow::anyhow!("the recovery ended {state}"));
            }
            _ if started.elapsed() > RECOVERY_LIMIT => {
                break Err(anyhow::anyhow!("no recovery within {RECOVERY_LIMIT:?}: {VICTIM} is {state}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let back = match result {
        Ok(()) => watcher.await?,
        Err(error) => {
            watcher.abort();
            Err(error)
        }
    };
    shutdown.cancel();
    tracker.await?;
    let outcomes = worker.await?;
    let all_back = back?;
    anyhow::ensure!(
        outcomes.iter().all(|outcome| *outcome == ProcessOutcome::Succeeded),
        "recovery tasks: {outcomes:?}"
    );

    // The milestones, from what the tracker and the task recorded.
    let history = aos_db::node_history(db, victim.id, 1000).await?;
    let first = |to: &str| {
        history
            .iter()
            .filter(|event| event.occurred_at >= killed && event.to_state.as_deref() == Some(to))
            .map(|event| event.occurred_at)
            .min()
    };
    let forced_down = history
        .iter()
        .filter(|event| event.occurred_at >= killed && event.kind == "forced_down")
        .map(|event| event.occurred_at)
        .min()
        .context("no forced_down event")?;
    let tasks = aos_ha::store::list_tasks(db, 10, Some(victim.id)).await?;
    anyhow::ensure!(tasks.len() == 1, "{} recovery tasks recorded", tasks.len());
    let (_, steps) = aos_ha::store::task_with_steps(db, &tasks[0].id).await?.context("the task")?;
    let evacuations: Vec<DateTime<Utc>> = steps
        .iter()
        .filter(|step| step.name == "evacuate" && step.state == TaskStepState::Succeeded)
        .filter_map(|step| step.finished_at)
        .collect();
    anyhow::ensure!(evacuations.len() == ids.len(), "{} of {} evacuate steps succeeded", evacuations.len(), ids.len());
    let since = |at: DateTime<Utc>| seconds_between(killed, at);
    Ok(Figures {
        nova_down: since(first("suspect").context("no suspect transition")?),
        confirmed: since(first("down").context("no down transition")?),
        fenced: Some(since(first("fenced").context("no fenced transition")?)),
        forced_down: since(forced_down),
        first_evacuation: since(*evacuations.iter().min().context("no evacuation")?),
        last_evacuation: since(*evacuations.iter().max().context("no evacuation")?),
        all_back: since(all_back),
        finished: since(first("evacuated").context("no evacuated transition")?),
    })
}

// --- the floor ------------------------------------------------------------------------------

async fn run_floor(client: &OpenStackClient, server_ids: &Arc<Mutex<Vec<String>>>) -> anyhow::Result<Figures> {
    let ids = server_ids.lock().expect("server ids").clone();
    let killed = kill(VICTIM)?;
    let watcher = tokio::spawn(watch_back(client.clone(), ids.clone(), killed));
    let started = Instant::now();
    let service = loop {
        let service = client.compute_services().await?.into_iter().find(|service| service.host == VICTIM);
        match service {
            Some(service) if service.state == ServiceState::Down => break service,
            _ if started.elapsed() > SETUP_LIMIT => anyhow::bail!("Nova never said {VICTIM} down"),
            _ => tokio::time::sleep(NOVA_POLL).await,
        }
    };
    let nova_down = Utc::now();
    client.set_forced_down(&service.id, true).await?;
    let forced_down = Utc::now();
    let on_victim = client
        .servers(&ServerFilter { host: Some(VICTIM.to_owned()), all_tenants: true, ..ServerFilter::default() })
        .await?
        .into_iter()
        .map(|server| server.id)
        .collect::<Vec<_>>();
    let requests = on_victim.iter().map(|id| async move {
        let result = client.evacuate(id, None).await;
        (id, result, Utc::now())
    });
    let answers = futures::future::join_all(requests).await;
    let mut issued = Vec::new();
    for (id, result, at) in answers {
        result.with_context(|| format!("evacuate {id}"))?;
        issued.push(at);
    }
    anyhow::ensure!(issued.len() == ids.len(), "{} servers on {VICTIM}, {} booted", issued.len(), ids.len());
    let all_back = watcher.await??;
    let since = |at: DateTime<Utc>| seconds_between(killed, at);
    Ok(Figures {
        nova_down: since(nova_down),
        confirmed: since(nova_down),
        fenced: None,
        forced_down: since(forced_down),
        first_evacuation: since(*issued.iter().min().context("no evacuation")?),
        last_evacuation: since(*issued.iter().max().context("no evacuation")?),
        all_back: since(all_back),
        finished: since(all_back),
    })
}

// --- shared -------------------------------------------------------------------------------

/// Polls the servers (one list call) until every one is on another host than the victim,
/// ACTIVE with no task in progress; returns when the bench saw that first.
async fn watch_back(client: OpenStackClient, ids: Vec<String>, killed: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    loop {
        let at = Utc::now();
        let servers = client.servers(&ServerFilter { host: None, all_tenants: true, ..ServerFilter::default() }).await;
        let back = match &servers {
            Ok(servers) => servers
                .iter()
                .filter(|server| wanted.contains(server.id.as_str()))
                .filter(|server| {
                    server.host.as_deref().is_some_and(|host| host != VICTIM)
                        && server.status == "ACTIVE"
                        && server.task_state.is_none()
                })
                .count(),
            Err(error) => {
                eprintln!("listing the servers failed: {error}");
                0
            }
        };
        if back == wanted.len() {
            return Ok(at);
        }
        anyhow::ensure!(
            seconds_between(killed, Utc::now()) < RECOVERY_LIMIT.as_secs_f64(),
            "only {back} of {} servers back after {RECOVERY_LIMIT:?}",
            wanted.len()
        );
        tokio::time::sleep(SERVERS_POLL).await;
    }
}

/// Boots `count` servers on the victim and waits until every one is ACTIVE there. A server
/// that ends in ERROR (a freshly registered compute can be "not heard from" in the scheduler's
/// view for a few seconds: NoValidHost) is deleted and booted again.
async fn boot(
    client: &OpenStackClient,
    image_id: &str,
    flavor_id: &str,
    count: usize,
    server_ids: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut booted = 0;
    loop {
        while server_ids.lock().expect("server ids").len() < count {
            let new_server = NewServer {
                name: unique_name(&format!("aos-bench-recovery-{booted}")),
                image_id: image_id.to_owned(),
                flavor_id: flavor_id.to_owned(),
                host: Some(VICTIM.to_owned()),
                ..NewServer::default()
            };
            match client.create_server(&new_server).await {
                Ok(id) => {
                    server_ids.lock().expect("server ids").push(id);
                    booted += 1;
                }
                // The host may not be schedulable yet (Placement, the scheduler's host map).
                Err(error @ OpenStackError::BadRequest { .. }) if started.elapsed() < SETUP_LIMIT => {
                    eprintln!("boot on {VICTIM} refused, retrying: {error}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(error) => return Err(error).context("boot a server"),
            }
        }
        let ids = server_ids.lock().expect("server ids").clone();
        let servers =
            client.servers(&ServerFilter { host: None, all_tenants: true, ..ServerFilter::default() }).await?;
        let states: BTreeMap<&str, (&str, bool, Option<&str>)> = servers
            .iter()
            .map(|s| (s.id.as_str(), (s.status.as_str(), s.task_state.is_none(), s.host.as_deref())))
            .collect();
        let active = ids.iter().filter(|id| states.get(id.as_str()) == Some(&("ACTIVE", true, Some(VICTIM)))).count();
        if active == ids.len() {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < SETUP_LIMIT, "{active} of {} servers ACTIVE on {VICTIM}", ids.len());
        let failed: Vec<String> =
            ids.iter().filter(|id| states.get(id.as_str()).is_some_and(|(s, ..)| *s == "ERROR")).cloned().collect();
        if !failed.is_empty() {
            eprintln!("{} server(s) in ERROR at boot on {VICTIM}; booting them again", failed.len());
            aos_openstack::testing::delete_servers(client, &failed).await;
            server_ids.lock().expect("server ids").retain(|id| !failed.contains(id));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Brings the hosts back as they were before a run: every compute started (Nova then closes
/// the evacuations of the dead one), un-forced, the servers deleted, every host up.
async fn restore_hosts(client: &OpenStackClient, server_ids: &[String]) {
    for host in HOSTS {
        if let Err(error) = compute("start", host) {
            eprintln!("{error:#}");
        }
    }
    for host in HOSTS {
        let Some(service) = compute_service(client, host).await else { continue };
        if !service.forced_down {
            continue;
        }
        // Nova refuses while the evacuations from the host are not closed by its compute.
        let started = Instant::now();
        while let Err(error) = client.set_forced_down(&service.id, false).await {
            if started.elapsed() > SETUP_LIMIT {
                eprintln!("{host} stays forced down: {error}");
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    aos_openstack::testing::delete_servers(client, server_ids).await;
    for host in HOSTS {
        let started = Instant::now();
        loop {
            let service = compute_service(client, host).await;
            if service.as_ref().is_some_and(|s| s.state == ServiceState::Up && !s.forced_down) {
                break;
            }
            if started.elapsed() > SETUP_LIMIT {
                eprintln!("{host} is not back up: {service:?}");
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// `compute.sh VERB HOST` for our hosts, with room for the servers.
fn compute(verb: &str, host: &str) -> anyhow::Result<String> {
    aos_openstack::testing::compute_sh_with_ram(verb, host, FAKE_RAM_MB).map_err(anyhow::Error::msg)
}

/// Kills the host's compute; returns the instant `compute.sh` sent the SIGKILL (it prints
/// `killed HOST (pid N) at EPOCH`), or the instant before the call when it says nothing.
fn kill(host: &str) -> anyhow::Result<DateTime<Utc>> {
    let before = Utc::now();
    let output = compute("kill", host)?;
    let at = output
        .lines()
        .find_map(|line| line.contains("killed").then(|| line.rsplit(" at ").next()).flatten())
        .and_then(|epoch| epoch.trim().parse::<f64>().ok())
        .and_then(|epoch| DateTime::from_timestamp_micros((epoch * 1e6) as i64));
    anyhow::ensure!(output.contains("killed"), "compute.sh kill {host}: {output}");
    Ok(at.unwrap_or(before))
}

/// The bench's BMC emulators, linked to the cloud: powering one off kills its compute.
fn ensure_bmcs() -> anyhow::Result<PathBuf> {
    let hook =
        format!("env OSENV_STATE_DIR={} {}", osenv_state_dir().display(), osenv_dir().join("bmc-link.sh").display());
    let script = repo().join("scripts/ensure-bmc-sim.sh");
    let status = std::process::Command::new(&script)
        .arg(BMC_INSTANCE)
        .env("AOS_BMC_SIM_HOSTS", HOSTS.join(" "))
        .env("AOS_BMC_SIM_IPMI_PORT", IPMI_BASE_PORT.to_string())
        .env("AOS_BMC_SIM_REDFISH_PORT", REDFISH_PORT.to_string())
        .env("AOS_BMC_SIM_POWER_HOOK", hook)
        .env("AOS_BMC_SIM_PASSWORD", BMC_PASSWORD)
        .stdout(to_stderr())
        .status()
        .context("run scripts/ensure-bmc-sim.sh")?;
    anyhow::ensure!(status.success(), "the bench's BMC emulators did not start");
    let output = std::process::Command::new(&script).args(["--print-run-dir", BMC_INSTANCE]).output()?;
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

fn ipmi_port(run_dir: &Path, host: &str) -> anyhow::Result<u16> {
    let table = std::fs::read_to_string(run_dir.join("hosts.tsv")).context("bmc-sim hosts.tsv")?;
    table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&host))
        .and_then(|fields| fields.get(2)?.parse().ok())
        .with_context(|| format!("{host} not in the bmc-sim instance {BMC_INSTANCE}"))
}

/// What the helper scripts print goes to stderr: stdout ends with the headline.
fn to_stderr() -> std::process::Stdio {
    use std::os::fd::AsFd as _;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => fd.into(),
        Err(_) => std::process::Stdio::null(),
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Nova's `service_down_time` and `report_interval` of the test cloud, when its config says.
fn nova_timing() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(osenv_state_dir().join("etc/nova/nova.conf")).ok()?;
    let value = |key: &str| {
        text.lines()
            .filter_map(|line| line.split_once('='))
            .find(|(name, _)| name.trim() == key)
            .and_then(|(_, value)| value.trim().parse().ok())
    };
    Some((value("service_down_time")?, value("report_interval")?))
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

fn report(args: &RecoveryArgs, nova: Option<(u64, u64)>, ours: Option<&Figures>, floor: Option<&Figures>) {
    println!(
        "recovery of one host: {} m1.nano servers (ACTIVE) on {VICTIM}, hosts {}; our tracker every {} s \
         (mutex 3, mutex_up 1, max_down_hosts 1), fencing through IPMI, isolation check off",
        args.servers,
        HOSTS.join(", "),
        args.loop_time
    );
    let cell = |figures: Option<&Figures>, pick: &dyn Fn(&Figures) -> Option<f64>| match figures.and_then(pick) {
        Some(seconds) => format!("{seconds:.1}"),
        None => "-".to_owned(),
    };
    type Pick = Box<dyn Fn(&Figures) -> Option<f64>>;
    let rows: [(&str, Pick); 8] = [
        ("Nova says down", Box::new(|f| Some(f.nova_down))),
        ("down confirmed", Box::new(|f| Some(f.confirmed))),
        ("fenced (BMC off, verified)", Box::new(|f| f.fenced)),
        ("forced down in Nova", Box::new(|f| Some(f.forced_down))),
        ("first evacuation issued", Box::new(|f| Some(f.first_evacuation))),
        ("last evacuation issued", Box::new(|f| Some(f.last_evacuation))),
        ("all servers back (bench's poll)", Box::new(|f| Some(f.all_back))),
        ("recovery finished", Box::new(|f| Some(f.finished))),
    ];
    println!("{:<36} {:>8} {:>8}", "seconds after the kill", "ours", "floor");
    for (name, pick) in &rows {
        println!("{name:<36} {:>8} {:>8}", cell(ours, pick.as_ref()), cell(floor, pick.as_ref()));
    }
    let nova_says = ours.or(floor).map(|f| f.nova_down).unwrap_or(0.0);
    let setting = match nova {
        Some((down_time, interval)) => {
            format!("service_down_time {down_time} s, heartbeat every {interval} s")
        }
        None => "service_down_time unknown".to_owned(),
    };
    println!(
        "Nova's share: Nova itself says the host down {nova_says:.1} s after the kill ({setting}); that wait is \
         the same for both and no tool can shorten it without changing Nova's settings."
    );
    for (name, figures) in [("ours", ours), ("floor", floor)] {
        if let Some(figures) = figures {
            println!(
                "  {name}: {:.0} % of its time to all servers back is Nova's down detection; {:.1} s is its own",
                100.0 * figures.nova_down / figures.all_back.max(f64::EPSILON),
                figures.all_back - figures.nova_down
            );
        }
    }
    let headline = |figures: Option<&Figures>| figures.map(|f| format!("{:.1} s", f.all_back)).unwrap_or("-".into());
    println!(
        "recovery: {} servers back after a host failure in {} (ours), {} (floor)",
        args.servers,
        headline(ours),
        headline(floor)
    );
}
