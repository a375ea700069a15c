//! `demo`: the suite's main job — a dead hypervisor confirmed, fenced, forced down and its
//! servers evacuated by priority — shown live on a simulated cloud, with nothing to install.
//!
//! Everything runs in this process on the embedded default: a fresh SQLite database (in a
//! temporary directory, or `--data-dir`), migrated like any other; a [`SimCloud`] (hosts with
//! BMCs, servers with mixed recovery priorities, Nova's `service_down_time`, API latencies,
//! rebuild times) mirrored into `nodes`; the node tracker's round on a timer, as the beat runs
//! it ([`aos_ha::tracker_round`], its tasks published on the embedded queue); and a worker
//! ([`JobRunner`] with [`aos_ha::register_tasks`]) consuming that queue. Then the scenario
//! injects its failure and the timeline is printed as it happens.
//!
//! The timeline is read back from the database — the node's `node_events` and the recovery
//! task's row — so it is what an operator sees with `node show`; only the servers' arrival
//! on their new hosts comes from the cloud (as `openstack server list` would show it).
//! The summary checks what matters (the priority-0 server left in place, a stopped server
//! still stopped, each server evacuated exactly once by Nova's records) and the command exits
//! 1 with the reason when the scenario did not complete before `--deadline`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_config::DatabaseUrl;
use aos_db::DatabaseConnection;
use aos_db::entity::{NodeState, TaskState, node_event};
use aos_ha::isolation::IsolationSettings;
use aos_ha::plan::EvacuationPlan;
use aos_ha::sim::{SimCloud, SimSettings};
use aos_ha::{Recovery, RecoverySettings, TrackerRules};
use aos_jobs::{JobQueue, JobRunner, RunnerSettings, TaskId};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// `[host_tasks] recovery_priority`'s default: the priority of a server without the metadata.
const DEFAULT_PRIORITY: u32 = 5;
/// `[node_tracker] mutex` and `mutex_up` (their defaults).
const MUTEX: u32 = 3;
const MUTEX_UP: u32 = 1;
/// How often the timeline is read from the database and the cloud.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// Tracker rounds after the end of a scenario that holds or withdraws, to show that nothing
/// else happens.
const QUIET_ROUNDS: u64 = 4;
/// The database file in the data directory (replaced by each run).
const DATABASE_FILE: &str = "demo.sqlite";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// What happens to the cloud.
    #[arg(long, value_enum, default_value_t = Scenario::HostFailure)]
    scenario: Scenario,
    /// Hypervisors in the simulated cloud, each with a BMC.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=1000))]
    hosts: u32,
    /// Servers, spread over the hosts (the failing host gets about twice a fair share).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    servers: u32,
    /// Seed of the layout: which host fails, which kinds of servers (priorities) it runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds between two tracker rounds (`[node_tracker] loop_time`, 30 s in production).
    #[arg(long = "loop-time", default_value_t = 0.5, value_name = "SECONDS")]
    loop_time: f64,
    /// Latency of every simulated Nova API call.
    #[arg(long = "api-latency-ms", default_value_t = 30)]
    api_latency_ms: u64,
    /// How long the simulated Nova takes to rebuild an evacuated server elsewhere.
    #[arg(long = "rebuild-ms", default_value_t = 1000)]
    rebuild_ms: u64,
    /// Nova's `service_down_time`: a dead host is reported down this long after it died.
    #[arg(long = "service-down-ms", default_value_t = 2000)]
    service_down_ms: u64,
    /// `[node_tracker] max_down_hosts`: more nodes down at once than this, evacuate nothing.
    #[arg(long = "max-down-hosts", default_value_t = 1)]
    max_down_hosts: u32,
    /// Keep the database in this directory (`demo.sqlite`, replaced on each run) and write a
    /// `demo.conf` next to it, to look at the result with `node list` / `node show`.
    /// Default: a temporary directory, removed at the end.
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Give up (exit 1) when the scenario has not completed this many seconds after the failure.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    deadline: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// One host with servers dies: confirmed, fenced, forced down, evacuated by priority.
    HostFailure,
    /// Two hosts die at once with max_down_hosts 1: the storm guard holds, nothing is
    /// evacuated, an alarm is raised.
    Storm,
    /// A host stops answering and comes back before the down is confirmed: nothing is done.
    Flap,
    /// A host is cut off from the control plane but keeps running its servers (and writing
    /// its state file): the isolation check withholds the evacuation.
    Partition,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::HostFailure => "host-failure",
            Scenario::Storm => "storm",
            Scenario::Flap => "flap",
            Scenario::Partition => "partition",
        }
    }

    fn failing_hosts(self) -> usize {
        if self == Scenario::Storm { 2 } else { 1 }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let loop_time = Duration::try_from_secs_f64(args.loop_time)
        .ok()
        .filter(|time| !time.is_zero())
        .context("--loop-time must be a positive number of seconds")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(demo(&args, loop_time));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result.map(|()| ExitCode::SUCCESS)
}

/// A server the demo placed, as it was before the failure.
struct PlacedServer {
    id: String,
    name: String,
    host: String,
    priority: Option<u32>,
    stopped: bool,
}

impl PlacedServer {
    fn effective_priority(&self) -> u32 {
        self.priority.unwrap_or(DEFAULT_PRIORITY)
    }

    fn expected_status(&self) -> &'static str {
        if self.stopped { "SHUTOFF" } else { "ACTIVE" }
    }
}

struct Layout {
    hosts: Vec<String>,
    /// The hosts the scenario fails, the first one carrying the priority-0 and stopped servers.
    failing: Vec<String>,
    servers: Vec<PlacedServer>,
}

impl Layout {
    fn servers_on<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a PlacedServer> + 'a {
        self.servers.iter().filter(move |server| server.host == host)
    }

    /// The servers of the failing hosts that a recovery moves (priority above 0).
    fn to_evacuate(&self) -> Vec<&PlacedServer> {
        self.servers
            .iter()
            .filter(|server| self.failing.contains(&server.host) && server.effective_priority() > 0)
            .collect()
    }
}

/// SplitMix64: a reproducible layout from `--seed` without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Kinds of servers and their recovery priority (`None`: the default).
const KINDS: [(&str, Option<u32>); 6] =
    [("db", Some(10)), ("api", Some(8)), ("web", None), ("cache", Some(3)), ("queue", Some(8)), ("app", None)];

fn build_cloud(args: &DemoArgs) -> (Arc<SimCloud>, Layout) {
    let sim = Arc::new(SimCloud::new(SimSettings {
        call_latency: Duration::from_millis(args.api_latency_ms),
        rebuild_time: Duration::from_millis(args.rebuild_ms),
        service_down_time: Duration::from_millis(args.service_down_ms),
        ..SimSettings::default()
    }));
    let mut rng = Rng(args.seed);
    let count = args.hosts as usize;
    let width = count.to_string().len().max(2);
    let hosts: Vec<String> = (1..=count).map(|index| format!("compute-{index:0width$}")).collect();
    for host in &hosts {
        sim.add_host(host, true);
    }
    let first = rng.below(count);
    let failing: Vec<String> =
        (0..args.scenario.failing_hosts().min(count)).map(|offset| hosts[(first + offset) % count].clone()).collect();
    // Servers go round a cycle in which each failing host appears twice, so it has more to
    // evacuate than the others.
    let cycle: Vec<&String> = failing
        .iter()
        .flat_map(|host| [host, host])
        .chain(hosts.iter().filter(|host| !failing.contains(host)))
        .collect();
    let mut by_host: BTreeMap<&String, usize> = BTreeMap::new();
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut templates = 0;
    let mut servers = Vec::with_capacity(args.servers as usize);
    // The first failing host's servers are made first, so they are `db-1`, `api-1`, ...
    let mut placement: Vec<&String> = (0..args.servers as usize).map(|index| cycle[index % cycle.len()]).collect();
    placement.sort_by_key(|host| **host != failing[0]);
    for host in placement {
        let nth = by_host.entry(host).or_insert(0);
        let on_first_failing = *host == failing[0];
        let (name, priority, stopped) = match *nth {
            // A server tied to its host (e.g. a licence server): never evacuated.
            0 if on_first_failing => ("license-1".to_owned(), Some(0), false),
            // A stopped server must come back stopped.
            1 if on_first_failing => ("batch-1".to_owned(), None, true),
            _ => {
                // The first failing host runs one of each kind, highest priorities first (the
                // showcase); the others get kinds at random.
                let (kind, priority) = if on_first_failing {
                    templates += 1;
                    KINDS[(templates - 1) % KINDS.len()]
                } else {
                    KINDS[rng.below(KINDS.len())]
                };
                let number = per_kind.entry(kind).or_insert(0);
                *number += 1;
                (format!("{kind}-{number}"), priority, false)
            }
        };
        *nth += 1;
        let id = sim.add_server(&name, host, priority, stopped);
        servers.push(PlacedServer { id, name, host: host.clone(), priority, stopped });
    }
    (sim, Layout { hosts, failing, servers })
}

/// Where the database lives; a temporary directory is removed when this is dropped.
struct DataDir {
    path: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

fn data_dir(requested: Option<&Path>) -> anyhow::Result<DataDir> {
    match requested {
        Some(path) => {
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot create the data directory {}", path.display()))?;
            let path = std::path::absolute(path)?;
            for suffix in ["", "-wal", "-shm"] {
                let file = path.join(format!("{DATABASE_FILE}{suffix}"));
                if file.exists() {
                    std::fs::remove_file(&file).with_context(|| format!("cannot replace {}", file.display()))?;
                }
            }
            Ok(DataDir { path, _temporary: None })
        }
        None => {
            let directory = tempfile::Builder::new().prefix("aos-demo-").tempdir()?;
            Ok(DataDir { path: directory.path().to_owned(), _temporary: Some(directory) })
        }
    }
}

/// What the background loops share with the timeline.
#[derive(Default)]
struct Shared {
    rounds: AtomicU64,
    problems: Mutex<Vec<String>>,
}

impl Shared {
    fn problem(&self, problem: String) {
        self.problems.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(problem);
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

async fn demo(args: &DemoArgs, loop_time: Duration) -> anyhow::Result<()> {
    let directory = data_dir(args.data_dir.as_deref())?;
    let database_path = directory.path.join(DATABASE_FILE);
    let database_url = DatabaseUrl::SqliteFile(database_path.clone());
    let db = aos_db::connect(&database_url.to_sqlx_url(), 8, Duration::from_secs(10))
        .await
        .with_context(|| format!("cannot open {}", database_path.display()))?;
    let migrated = aos_db::migrate_to(&db, None).await?;

    let (sim, layout) = build_cloud(args);
    aos_ha::cloud::sync_nodes_from(&db, sim.as_ref(), |_| true, "demo").await?;
    let rules = TrackerRules {
        mutex: MUTEX,
        mutex_up: MUTEX_UP,
        max_down_hosts: args.max_down_hosts,
        allow_evacuate_host: true,
        deny_evacuate: BTreeSet::new(),
    };
    print_setup(args, loop_time, &database_path, migrated.to, &layout, &rules);

    let queue = JobQueue::sqlite(&db).await?;
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let tracker = tokio::spawn(tracker_loop(
        db.clone(),
        Arc::clone(&sim),
        queue.clone(),
        rules.clone(),
        loop_time,
        Arc::clone(&shared),
        stop.clone(),
    ));
    let runner = worker(&db, &sim, &queue, args.max_down_hosts);
    let worker = {
        let stop = stop.clone();
        tokio::spawn(async move { runner.run(stop).await })
    };

    let result = async {
        // Steady state first: a couple of rounds in which nothing happens.
        while shared.rounds.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
        let mut watch = Watch::new(&db, args, &layout, Arc::clone(&sim), Arc::clone(&shared)).await?;
        watch.run().await
    }
    .await;

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    queue.close().await;
    db.close().await?;
    if args.data_dir.is_some() {
        let config = directory.path.join("demo.conf");
        std::fs::write(&config, format!("# Written by `aos-cloud-manager demo`.\n[database]\nurl = {database_url}\n"))?;
        out!("");
        out!("The database stays in {}; look at it with:", directory.path.display());
        let prefix = format!("  aos-cloud-manager --no-default-config-files --config-file {}", config.display());
        out!("{prefix} node list");
        out!("{prefix} node show {}", layout.failing[0]);
    }
    result
}

fn print_setup(
    args: &DemoArgs,
    loop_time: Duration,
    database: &Path,
    schema: u32,
    layout: &Layout,
    rules: &TrackerRules,
) {
    out!("aos-cloud-manager demo: scenario {} (seed {})", args.scenario.name(), args.seed);
    out!("  database    {} (SQLite, schema version {schema}, embedded job queue)", database.display());
    out!(
        "  cloud       simulated: {} hosts with BMCs, {} servers; Nova API {} ms per call, rebuild {} ms, \
         service_down_time {} ms",
        layout.hosts.len(),
        layout.servers.len(),
        args.api_latency_ms,
        args.rebuild_ms,
        args.service_down_ms
    );
    out!(
        "  tracker     every {:.2} s; mutex {}, mutex_up {}, max_down_hosts {}; isolation check on",
        loop_time.as_secs_f64(),
        rules.mutex,
        rules.mutex_up,
        rules.max_down_hosts
    );
    for host in &layout.failing {
        out!("");
        out!("Servers on {host} (the host that will fail):");
        let mut servers: Vec<&PlacedServer> = layout.servers_on(host).collect();
        servers.sort_by_key(|server| (std::cmp::Reverse(server.effective_priority()), server.name.clone()));
        for server in servers {
            let priority = match server.priority {
                Some(priority) => priority.to_string(),
                None => format!("{DEFAULT_PRIORITY} (default)"),
            };
            let note = if server.effective_priority() == 0 { "  never evacuated" } else { "" };
            out!("  {:<10} priority {:<12} {}{note}", server.name, priority, server.expected_status());
        }
    }
    out!("");
}

/// The tracker's round every `loop_time`, as the beat runs it; the tasks it records are
/// published on the queue right after the round commits.
async fn tracker_loop(
    db: DatabaseConnection,
    sim: Arc<SimCloud>,
    queue: JobQueue,
    rules: TrackerRules,
    loop_time: Duration,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(loop_time);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match aos_ha::tracker_round(&db, sim.as_ref(), &rules, None, "beat@demo").await {
            Ok(report) => {
                for task_id in report.to_publish {
                    if let Err(error) = queue.publish(task_id).await {
                        shared.problem(format!("publishing task {task_id}: {error:#}"));
                    }
                }
            }
            Err(error) => shared.problem(format!("tracker round: {error:#}")),
        }
        shared.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// A worker with the HA tasks, tuned for a demo's time scale.
fn worker(db: &DatabaseConnection, sim: &Arc<SimCloud>, queue: &JobQueue, max_down_hosts: u32) -> JobRunner {
    let recovery = Recovery {
        db: db.clone(),
        cloud: sim.clone(),
        fencer: sim.clone(),
        state_files: sim.clone(),
        settings: RecoverySettings {
            isolation: Some(IsolationSettings { delay: Duration::from_millis(300), attempts: 2, instance_rate: 50 }),
            max_down_hosts,
            default_priority: DEFAULT_PRIORITY,
            evacuation_retries: 2,
            prioritized_evacuation_timeout: Duration::from_secs(30),
            retries_wait_for_vm_status: 300,
            poll_interval: Duration::from_millis(100),
            concurrency: 4,
            power_explains_within: Duration::from_secs(300),
            restart_after_evacuation: false,
            host_restart_timeout: Duration::from_secs(60),
            reserve_up_timeout: Duration::from_secs(60),
            shutdown_interval: Duration::from_millis(200),
            shutdown_max_tick: 50,
        },
    };
    let settings = RunnerSettings {
        heartbeat_interval: Duration::from_secs(1),
        stale_after: Duration::from_secs(10),
        max_attempts: 3,
        retry_backoff: Duration::from_millis(200),
        retry_backoff_max: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(5),
        sqlite_poll_interval: Duration::from_millis(100),
    };
    aos_ha::register_tasks(JobRunner::new(db.clone(), queue.clone(), "worker@demo", 2), recovery)
        .with_settings(settings)
}

/// A recovery task seen in a node's timeline.
struct WatchedTask {
    node: String,
    claimed_shown: bool,
    final_state: Option<TaskState>,
    result: Option<serde_json::Value>,
}

/// The live timeline: reads the failing nodes' events and their tasks from the database and
/// the servers from the cloud, prints what is new, and decides when the scenario is over.
struct Watch<'a> {
    db: &'a DatabaseConnection,
    args: &'a DemoArgs,
    layout: &'a Layout,
    sim: Arc<SimCloud>,
    shared: Arc<Shared>,
    /// (name, node id) of the failing hosts.
    nodes: Vec<(String, i64)>,
    last_event: BTreeMap<i64, i64>,
    states: BTreeMap<String, NodeState>,
    /// First time (seconds after the failure) of each (node, milestone).
    milestones: BTreeMap<(String, &'static str), f64>,
    tasks: BTreeMap<String, WatchedTask>,
    /// Server id → (seconds after the failure, host) once it is back elsewhere.
    arrived: BTreeMap<String, (f64, String)>,
    failed_at: Instant,
    failed_at_utc: DateTime<Utc>,
    /// Round count when the scenario's outcome was reached (for the quiet rounds after).
    settled_at_round: Option<u64>,
    revived: bool,
}

impl<'a> Watch<'a> {
    async fn new(
        db: &'a DatabaseConnection,
        args: &'a DemoArgs,
        layout: &'a Layout,
        sim: Arc<SimCloud>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Watch<'a>> {
        // The timeline starts at the failure: the set-up's events (the node sync) are left out.
        let mut nodes = Vec::new();
        let mut last_event = BTreeMap::new();
        for name in &layout.failing {
            let node = aos_db::find_node(db, name).await?.with_context(|| format!("node {name} was not mirrored"))?;
            let latest = aos_db::node_history(db, node.id, 1).await?.first().map(|event| event.id).unwrap_or(0);
            last_event.insert(node.id, latest);
            nodes.push((name.clone(), node.id));
        }
        let up = aos_db::list_nodes(db).await?.iter().filter(|node| node.state == NodeState::Up).count();
        out!(
            "Steady state: {up} of {} nodes up after {} tracker rounds. Timeline (seconds after the failure):",
            layout.hosts.len(),
            shared.rounds.load(Ordering::Relaxed)
        );
        Ok(Watch {
            db,
            args,
            layout,
            sim,
            shared,
            nodes,
            last_event,
            states: BTreeMap::new(),
            milestones: BTreeMap::new(),
            tasks: BTreeMap::new(),
            arrived: BTreeMap::new(),
            failed_at: Instant::now(),
            failed_at_utc: Utc::now(),
            settled_at_round: None,
            revived: false,
        })
    }

    fn line(at: f64, subject: &str, what: &str, detail: &str) -> (f64, String) {
        (at, format!("  {at:+7.2}s  {subject:<11} {what:<24} {detail}"))
    }

    fn since_failure(&self, time: DateTime<Utc>) -> f64 {
        (time - self.failed_at_utc).num_microseconds().unwrap_or(0) as f64 / 1e6
    }

    fn milestone(&mut self, node: &str, name: &'static str, at: f64) {
        self.milestones.entry((node.to_owned(), name)).or_insert(at);
    }

    fn reached(&self, node: &str, name: &'static str) -> Option<f64> {
        self.milestones.get(&(node.to_owned(), name)).copied()
    }

    fn rounds(&self) -> u64 {
        self.shared.rounds.load(Ordering::Relaxed)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        self.inject();
        let deadline = self.failed_at + Duration::from_secs(self.args.deadline);
        loop {
            self.poll().await?;
            if let Some(done) = self.outcome() {
                return self.summary(done).await;
            }
            if Instant::now() >= deadline {
                let states: Vec<String> =
                    self.states.iter().map(|(node, state)| format!("{node} is {state}")).collect();
                let states = if states.is_empty() { "no node event yet".to_owned() } else { states.join(", ") };
                let problems = self.shared.problems();
                let problems =
                    if problems.is_empty() { String::new() } else { format!("; problems: {}", problems.join("; ")) };
                anyhow::bail!(
                    "the {} scenario did not complete within {} s of the failure ({states}){problems}",
                    self.args.scenario.name(),
                    self.args.deadline
                );
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }

    fn inject(&mut self) {
        self.failed_at = Instant::now();
        self.failed_at_utc = Utc::now();
        for host in &self.layout.failing {
            let servers = self.layout.servers_on(host).count();
            let (what, detail) = match self.args.scenario {
                Scenario::HostFailure | Scenario::Storm => {
                    self.sim.kill(host);
                    ("host killed", format!("hypervisor and its {servers} servers stop; Nova stops hearing it"))
                }
                Scenario::Flap => {
                    self.sim.kill(host);
                    ("host stops", "it will come back before the down is confirmed".to_owned())
                }
                Scenario::Partition => {
                    self.sim.partition(host);
                    (
                        "host cut off",
                        format!("Nova no longer hears it; it keeps running its {servers} servers and its state file"),
                    )
                }
            };
            out!("{}", Self::line(0.0, host, what, &detail).1);
        }
    }

    /// Reads what is new and prints it in time order.
    async fn poll(&mut self) -> anyhow::Result<()> {
        let mut lines = Vec::new();
        for (name, node_id) in self.nodes.clone() {
            let mut events = aos_db::node_history(self.db, node_id, 1000).await?;
            events.reverse();
            let last = self.last_event.get(&node_id).copied().unwrap_or(0);
            for event in events.into_iter().filter(|event| event.id > last) {
                self.last_event.insert(node_id, event.id);
                lines.extend(self.event_lines(&name, &event));
            }
        }
        lines.extend(self.task_lines().await?);
        lines.extend(self.server_lines());
        if self.args.scenario == Scenario::Flap
            && !self.revived
            && self.states.values().any(|s| *s == NodeState::Suspect)
        {
            let at = self.failed_at.elapsed().as_secs_f64();
            for host in &self.layout.failing {
                self.sim.revive(host);
                lines.push(Self::line(at, host, "host back", "Nova hears it again"));
            }
            self.revived = true;
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, line) in lines {
            out!("{line}");
        }
        Ok(())
    }

    fn event_lines(&mut self, node: &str, event: &node_event::Model) -> Vec<(f64, String)> {
        let at = self.since_failure(event.occurred_at);
        let details = event.details.clone().unwrap_or_default();
        let mut lines = Vec::new();
        match (event.kind.as_str(), event.from_state.as_deref(), event.to_state.as_deref()) {
            ("state_changed", Some(from), Some(to)) => {
                let mut detail = event.reason.clone();
                if let Some(count) = details.get("down_observations").and_then(|count| count.as_i64())
                    && matches!(to, "suspect" | "down")
                {
                    detail.push_str(&format!(" [{count}/{MUTEX}]"));
                }
                if details.get("was_already_off").and_then(|off| off.as_bool()) == Some(true) {
                    detail.push_str(" (the BMC found it already off)");
                }
                lines.push(Self::line(at, node, &format!("{from} -> {to}"), &detail));
                if let Ok(state) = to.parse::<NodeState>() {
                    self.states.insert(node.to_owned(), state);
                    if let Some(name) = state_milestone(state) {
                        self.milestone(node, name, at);
                    }
                }
                if to == "evacuating"
                    && let Ok(plan) = serde_json::from_value::<EvacuationPlan>(details)
                {
                    lines.extend(plan_lines(&plan).into_iter().map(|text| (at, format!("{:>40}{text}", ""))));
                }
            }
            (kind, _, _) => {
                let mut detail = event.reason.clone();
                if let Some(task_id) = &event.task_id
                    && kind == "recovery_requested"
                {
                    detail.push_str(&format!(" (task {})", &task_id[..8.min(task_id.len())]));
                    self.tasks.entry(task_id.clone()).or_insert(WatchedTask {
                        node: node.to_owned(),
                        claimed_shown: false,
                        final_state: None,
                        result: None,
                    });
                }
                let name: &'static str = match kind {
                    "recovery_requested" => "recovery_requested",
                    "forced_down" => "forced_down",
                    "evacuation_held" => "held",
                    "isolated" => "isolated",
                    "isolation_check" => "isolation_check",
                    _ => "other",
                };
                self.milestone(node, name, at);
                lines.push(Self::line(at, node, &kind.replace('_', " "), &detail));
            }
        }
        lines
    }

    async fn task_lines(&mut self) -> anyhow::Result<Vec<(f64, String)>> {
        let mut lines = Vec::new();
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let task_id: TaskId = id.parse().with_context(|| format!("task id {id}"))?;
            let Some(task) = aos_jobs::find_task(self.db, task_id).await? else {
                continue;
            };
            let node = self.tasks[&id].node.clone();
            if !self.tasks[&id].claimed_shown
                && let Some(claimed_at) = task.claimed_at
            {
                let at = self.since_failure(claimed_at);
                let by = task.claimed_by.clone().unwrap_or_default();
                lines.push(Self::line(at, &node, "task claimed", &format!("by {by}, attempt {}", task.attempts)));
                self.milestone(&node, "claimed", at);
                if let Some(watched) = self.tasks.get_mut(&id) {
                    watched.claimed_shown = true;
                }
            }
            if task.state.is_final() && self.tasks[&id].final_state.is_none() {
                let at = task.finished_at.map(|time| self.since_failure(time)).unwrap_or_default();
                let outcome = task
                    .result
                    .as_ref()
                    .and_then(|result| result.get("outcome"))
                    .and_then(|outcome| outcome.as_str())
                    .map(|outcome| format!("outcome: {outcome}"))
                    .or_else(|| task.error.clone())
                    .unwrap_or_default();
                lines.push(Self::line(at, &node, &format!("task {}", task.state), &outcome));
                self.milestone(&node, "task_final", at);
                if let Some(watched) = self.tasks.get_mut(&id) {
                    watched.final_state = Some(task.state);
                    watched.result = task.result.clone();
                }
            }
        }
        Ok(lines)
    }

    /// Servers of the failing hosts that are back elsewhere in their prior state.
    fn server_lines(&mut self) -> Vec<(f64, String)> {
        let at = self.failed_at.elapsed().as_secs_f64();
        let now: BTreeMap<String, aos_ha::CloudServer> =
            self.sim.servers_snapshot().into_iter().map(|server| (server.id.clone(), server)).collect();
        let mut lines = Vec::new();
        for placed in self.layout.servers.iter().filter(|server| self.layout.failing.contains(&server.host)) {
            let Some(server) = now.get(&placed.id) else { continue };
            let host = server.host.clone().unwrap_or_default();
            let back = host != placed.host && server.status == placed.expected_status() && server.task_state.is_none();
            if back && !self.arrived.contains_key(&placed.id) {
                let detail = format!(
                    "{} on {host} (was on {}), priority {}",
                    server.status,
                    placed.host,
                    placed.effective_priority()
                );
                lines.push(Self::line(at, &placed.name, "back", &detail));
                self.arrived.insert(placed.id.clone(), (at, host));
            }
        }
        lines
    }

    /// `Some(success)` once the scenario reached its end.
    fn outcome(&mut self) -> Option<bool> {
        let first = &self.layout.failing[0];
        let task_final = |watch: &Self| watch.tasks.values().all(|task| task.final_state.is_some());
        match self.args.scenario {
            Scenario::HostFailure => {
                let state = self.states.get(first).copied()?;
                let ended =
                    matches!(state, NodeState::Evacuated | NodeState::EvacuationFailed | NodeState::FenceFailed);
                (ended && !self.tasks.is_empty() && task_final(self)).then_some(state == NodeState::Evacuated)
            }
            Scenario::Storm => {
                let held = self.layout.failing.iter().all(|host| self.reached(host, "held").is_some());
                self.after_quiet_rounds(held)
            }
            Scenario::Flap => {
                let back_up = self.revived && self.states.get(first) == Some(&NodeState::Up);
                self.after_quiet_rounds(back_up)
            }
            Scenario::Partition => {
                let withheld = !self.tasks.is_empty() && task_final(self);
                self.after_quiet_rounds(withheld)
            }
        }
    }

    /// Once `settled`, waits [`QUIET_ROUNDS`] more tracker rounds (nothing else may happen).
    fn after_quiet_rounds(&mut self, settled: bool) -> Option<bool> {
        if !settled {
            return None;
        }
        let rounds = self.rounds();
        let since = *self.settled_at_round.get_or_insert(rounds);
        (rounds >= since + QUIET_ROUNDS).then_some(true)
    }

    async fn summary(&mut self, reached_end: bool) -> anyhow::Result<()> {
        // A last look, so nothing that landed with the final event is left out.
        self.poll().await?;
        let first = self.layout.failing[0].clone();
        let counts = self.sim.evacuation_counts();
        let snapshot: BTreeMap<String, aos_ha::CloudServer> =
            self.sim.servers_snapshot().into_iter().map(|server| (server.id.clone(), server)).collect();
        let mut checks: Vec<(bool, String)> = Vec::new();
        out!("");
        out!("Summary: {} on {} (times from the failure)", self.args.scenario.name(), self.layout.failing.join(", "));
        match self.args.scenario {
            Scenario::HostFailure => {
                let to_evacuate = self.layout.to_evacuate();
                let all_back = to_evacuate.iter().map(|server| self.arrived.get(&server.id).map(|(at, _)| *at));
                let all_back: Option<f64> =
                    all_back.collect::<Option<Vec<f64>>>().map(|times| times.into_iter().fold(0.0, f64::max));
                let rows = [
                    ("down confirmed", self.reached(&first, "down")),
                    ("recovery task claimed", self.reached(&first, "claimed")),
                    ("fenced (BMC off)", self.reached(&first, "fenced")),
                    ("forced down in Nova", self.reached(&first, "forced_down")),
                    ("all servers back", all_back.filter(|_| !to_evacuate.is_empty())),
                    ("done (evacuated)", self.reached(&first, "evacuated")),
                ];
                for (what, at) in rows {
                    out!("  {what:<24} {}", at.map(|at| format!("{at:+.2} s")).unwrap_or_else(|| "-".to_owned()));
                }
                out!("  servers moved: {} of {}", self.arrived.len(), to_evacuate.len());
                let mut moved: Vec<&&PlacedServer> = to_evacuate.iter().collect();
                moved.sort_by_key(|server| (std::cmp::Reverse(server.effective_priority()), server.name.clone()));
                for server in moved {
                    let now = snapshot.get(&server.id);
                    let host = now.and_then(|now| now.host.clone()).unwrap_or_default();
                    let status = now.map(|now| now.status.clone()).unwrap_or_default();
                    let ok = host != server.host && status == server.expected_status();
                    out!(
                        "    {:<10} priority {:>2}  {} -> {host:<11} {status}",
                        server.name,
                        server.effective_priority(),
                        server.host
                    );
                    checks.push((ok, format!("{} is back on another host, {}", server.name, server.expected_status())));
                }
                for server in self.layout.servers_on(&first).filter(|server| server.effective_priority() == 0) {
                    let host = snapshot.get(&server.id).and_then(|now| now.host.clone()).unwrap_or_default();
                    out!("  left in place: {} (priority 0) on {host}", server.name);
                    checks.push((host == first, format!("{} (priority 0) was left on {first}", server.name)));
                }
                let expected: BTreeSet<&str> = to_evacuate.iter().map(|server| server.id.as_str()).collect();
                let once = counts.len() == expected.len()
                    && counts.iter().all(|(id, count)| *count == 1 && expected.contains(id.as_str()));
                out!(
                    "  exactly once: {} evacuation record(s) in Nova for {} server(s); per server: {}",
                    counts.values().sum::<usize>(),
                    expected.len(),
                    if once { "1 each" } else { "NOT 1 each" }
                );
                checks.push((once, "each server was evacuated exactly once (Nova's evacuation records)".to_owned()));
                let fenced_first = match (self.reached(&first, "fenced"), self.reached(&first, "evacuating")) {
                    (Some(fenced), Some(evacuating)) => fenced <= evacuating,
                    _ => false,
                };
                checks.push((fenced_first, format!("{first} was fenced before any evacuation")));
                checks.push((!self.sim.is_running(&first), format!("{first} is powered off")));
                checks.push((reached_end, format!("{first} ended evacuated")));
            }
            Scenario::Storm => {
                for host in &self.layout.failing {
                    let at = self.reached(host, "down").map(|at| format!("{at:+.2} s")).unwrap_or_else(|| "-".into());
                    out!("  {host} down confirmed {at}, state now {}", self.state_of(host));
                    checks.push((
                        self.states.get(host) == Some(&NodeState::Down),
                        format!("{host} stays down, untouched"),
                    ));
                }
                self.print_alarms(&mut checks, "storm_guard").await?;
                out!("  next: an operator finds out what happened and evacuates what is really dead by hand");
                out!("        (`aos-cloud-manager node evacuate NAME`)");
                checks.push((self.tasks.is_empty(), "no recovery task was started".to_owned()));
            }
            Scenario::Flap => {
                let suspect =
                    self.reached(&first, "suspect").map(|at| format!("{at:+.2} s")).unwrap_or_else(|| "-".into());
                out!(
                    "  {first} suspect at {suspect}, back before mutex {MUTEX} down observations; state now {}",
                    self.state_of(&first)
                );
                checks.push((self.states.get(&first) == Some(&NodeState::Up), format!("{first} is up again")));
                checks.push((self.reached(&first, "down").is_none(), format!("{first} was never confirmed down")));
                checks.push((self.tasks.is_empty(), "no recovery task was started".to_owned()));
            }
            Scenario::Partition => {
                let outcome = self
                    .tasks
                    .values()
                    .filter_map(|task| task.result.as_ref())
                    .filter_map(|result| result.get("outcome").and_then(|outcome| outcome.as_str()).map(str::to_owned))
                    .next()
                    .unwrap_or_else(|| "-".to_owned());
                out!("  recovery task outcome: {outcome}; {first} is {}", self.state_of(&first));
                checks.push((outcome == "withheld", "the recovery task withheld the evacuation".to_owned()));
                checks.push((self.sim.is_running(&first), format!("{first} was not powered off")));
                self.print_alarms(&mut checks, "node_isolated").await?;
            }
        }
        if self.args.scenario != Scenario::HostFailure {
            out!("  servers evacuated: {}", counts.values().sum::<usize>());
            checks.push((counts.is_empty(), "nothing was evacuated".to_owned()));
        }
        let calls = self.sim.calls();
        let calls: Vec<String> = calls.iter().map(|(call, count)| format!("{call} {count}")).collect();
        out!("  tracker rounds: {}; simulated Nova API calls: {}", self.rounds(), calls.join(", "));
        for problem in self.shared.problems() {
            checks.push((false, format!("background loop: {problem}")));
        }
        out!("");
        for (ok, check) in &checks {
            out!("  [{}] {check}", if *ok { "ok" } else { "FAILED" });
        }
        let failed: Vec<&str> = checks.iter().filter(|(ok, _)| !ok).map(|(_, check)| check.as_str()).collect();
        anyhow::ensure!(failed.is_empty(), "the {} scenario failed: {}", self.args.scenario.name(), failed.join("; "));
        Ok(())
    }

    fn state_of(&self, host: &str) -> String {
        self.states.get(host).map(|state| state.to_string()).unwrap_or_else(|| "up".to_owned())
    }

    async fn print_alarms(&self, checks: &mut Vec<(bool, String)>, kind: &str) -> anyhow::Result<()> {
        let alarms = aos_ha::store::open_alarms(self.db).await?;
        let names: BTreeMap<i64, &str> = self.nodes.iter().map(|(name, id)| (*id, name.as_str())).collect();
        // The same alarm raised cloud-wide and per node reads once, with where it was raised.
        let mut by_message: BTreeMap<(&str, &str, &str), Vec<&str>> = BTreeMap::new();
        for alarm in &alarms {
            let place = match alarm.node_id {
                Some(id) => names.get(&id).copied().unwrap_or("another node"),
                None => "cloud-wide",
            };
            by_message.entry((&alarm.kind, &alarm.severity, &alarm.message)).or_default().push(place);
        }
        for ((kind, severity, message), places) in by_message {
            out!("  alarm {kind} [{severity}] ({}): {message}", places.join(", "));
        }
        checks.push((alarms.iter().any(|alarm| alarm.kind == kind), format!("a {kind} alarm is open")));
        Ok(())
    }
}

fn state_milestone(state: NodeState) -> Option<&'static str> {
    Some(match state {
        NodeState::Suspect => "suspect",
        NodeState::Down => "down",
        NodeState::Fencing => "fencing",
        NodeState::Fenced => "fenced",
        NodeState::Evacuating => "evacuating",
        NodeState::Evacuated => "evacuated",
        NodeState::Up => "up",
        _ => return None,
    })
}

fn plan_lines(plan: &EvacuationPlan) -> Vec<String> {
    let mut lines: Vec<String> = plan
        .groups
        .iter()
        .map(|group| {
            let names: Vec<String> = group
                .servers
                .iter()
                .map(|server| {
                    if server.expected_status == "SHUTOFF" {
                        format!("{} (stopped)", server.name)
                    } else {
                        server.name.clone()
                    }
                })
                .collect();
            format!("group priority {:>2}: {}", group.priority, names.join(", "))
        })
        .collect();
    if !plan.skipped.is_empty() {
        let names: Vec<&str> = plan.skipped.iter().map(|server| server.name.as_str()).collect();
        lines.push(format!("left in place (priority 0): {}", names.join(", ")));
    }
    lines
}
