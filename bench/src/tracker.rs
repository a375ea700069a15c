//! `tracker`: how long the node tracker's round takes on a large cloud, and what it writes.
//!
//! Set-up: a fresh database (SQLite by default, or MariaDB like the other figures), migrated;
//! a simulated cloud ([`aos_ha::sim::SimCloud`], no API latency, Nova's `service_down_time`
//! 0 so a killed host is reported down at once) with `--hosts` hypervisors and `--servers`
//! servers, mirrored into `nodes` with `aos_db::sync_nodes` as the beat's node sync does.
//! Then the tracker's own round ([`aos_ha::tracker_round`], the code the beat runs) in four
//! phases:
//!
//! 1. `steady`: `--rounds` rounds in which nothing changes (the cost of watching);
//! 2. `failure`: `--kill-percent` of the hosts die; rounds until every one is confirmed down
//!    (`mutex` rounds) and its recovery task is recorded (`max_down_hosts` set above the
//!    number killed, so the storm guard lets them through; no worker runs the tasks);
//! 3. `back up`: those hosts come back; rounds until every one is up again;
//! 4. `storm`: as many other hosts die with `max_down_hosts 1`; rounds until every one is
//!    confirmed down and held by the storm guard (an alarm and a timeline entry each).
//!
//! 5. `floor`: not the tracker: the same cloud call and read of every node in a write
//!    transaction, without writes — what a round that changes nothing could cost.
//!
//! Per round: the time of the whole round (cloud call + transaction), the rows it wrote
//! (nodes updated, node events, tasks and alarms inserted — counted after the round, outside
//! the timing) and the calls it made to the cloud. At the end, the process's peak and current
//! resident memory (`/proc/self/status`). Headline: the median steady round.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_db::entity::{NodeState, alarm, node, node_event, task};
use aos_db::testing::TestDatabase;
use aos_db::{DatabaseConnection, db_time};
use aos_ha::sim::{SimCloud, SimSettings};
use aos_ha::{Cloud as _, TrackerRules, tracker_round};
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

/// A liveness bound on the rounds of one phase (a phase normally takes `mutex` rounds).
const MAX_PHASE_ROUNDS: usize = 50;

#[derive(clap::Args)]
pub struct TrackerArgs {
    /// Hypervisors in the simulated cloud.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Servers spread over them (they do not change the round; they count in memory).
    #[arg(long, default_value_t = 0)]
    servers: usize,
    /// Steady-state rounds measured.
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// Share of the hosts killed in the failure and storm phases, in percent.
    #[arg(long = "kill-percent", default_value_t = 1.0)]
    kill_percent: f64,
    /// `[node_tracker] mutex`: down observations before a node is confirmed down.
    #[arg(long, default_value_t = 3)]
    mutex: u32,
    /// Database the tracker writes to.
    #[arg(long, value_enum, default_value_t = TrackerBackend::Sqlite)]
    backend: TrackerBackend,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TrackerBackend {
    Mysql,
    Sqlite,
}

impl TrackerBackend {
    fn name(self) -> &'static str {
        match self {
            TrackerBackend::Mysql => "mysql",
            TrackerBackend::Sqlite => "sqlite",
        }
    }
}

pub fn run(args: TrackerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.hosts >= 2, "--hosts must be at least 2");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        args.kill_percent > 0.0 && args.kill_percent <= 50.0,
        "--kill-percent must be above 0 and at most 50 (the failure and storm phases kill different hosts)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let database = match args.backend {
            TrackerBackend::Mysql => TestDatabase::mysql().await,
            TrackerBackend::Sqlite => TestDatabase::sqlite().await,
        }
        .with_context(|| format!("cannot create a {} database", args.backend.name()))?;
        let result = async {
            let db = database.connect_migrated().await.context("cannot migrate the database")?;
            let result = measure(&db, &args).await;
            db.close().await?;
            result
        }
        .await;
        database.cleanup().await;
        result
    })
}

/// Rows one round wrote.
#[derive(Debug, Default, Clone, Copy)]
struct Rows {
    nodes_updated: u64,
    events: u64,
    tasks: u64,
    alarms: u64,
}

impl Rows {
    fn total(self) -> u64 {
        self.nodes_updated + self.events + self.tasks + self.alarms
    }
}

impl std::fmt::Display for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} nodes, {} events, {} tasks, {} alarms)",
            self.total(),
            self.nodes_updated,
            self.events,
            self.tasks,
            self.alarms
        )
    }
}

/// One measured round.
struct Round {
    took: Duration,
    cloud_call: Duration,
    rows: Rows,
    cloud_calls: u64,
    transitions: usize,
    recoveries: usize,
    held: usize,
}

/// Table counts, to tell what a round inserted.
#[derive(Clone, Copy)]
struct Counts {
    events: u64,
    tasks: u64,
    alarms: u64,
}

async fn counts(db: &DatabaseConnection) -> anyhow::Result<Counts> {
    Ok(Counts {
        events: node_event::Entity::find().count(db).await?,
        tasks: task::Entity::find().count(db).await?,
        alarms: alarm::Entity::find().count(db).await?,
    })
}

struct Bench<'a> {
    db: &'a DatabaseConnection,
    sim: SimCloud,
    counts: Counts,
}

impl Bench<'_> {
    async fn round(&mut self, rules: &TrackerRules) -> anyhow::Result<Round> {
        let calls_before: u64 = self.sim.calls().values().sum();
        let started_at = db_time(Utc::now());
        let started = Instant::now();
        let report = tracker_round(self.db, &self.sim, rules, None, "bench@tracker").await?;
        let took = started.elapsed();
        let cloud_calls = self.sim.calls().values().sum::<u64>() - calls_before;
        let nodes_updated = node::Entity::find().filter(node::Column::UpdatedAt.gte(started_at)).count(self.db).await?;
        let after = counts(self.db).await?;
        let rows = Rows {
            nodes_updated,
            events: after.events - self.counts.events,
            tasks: after.tasks - self.counts.tasks,
            alarms: after.alarms - self.counts.alarms,
        };
        self.counts = after;
        Ok(Round {
            took,
            cloud_call: report.cloud_call,
            rows,
            cloud_calls,
            transitions: report.transitions.len(),
            recoveries: report.recoveries.len(),
            held: report.held.len(),
        })
    }

    /// Rounds until `done` holds for the nodes named `hosts` (read after each round).
    async fn rounds_until(
        &mut self,
        phase: &str,
        rules: &TrackerRules,
        hosts: &[String],
        done: impl Fn(&node::Model) -> bool,
    ) -> anyhow::Result<Vec<Round>> {
        let mut rounds = Vec::new();
        loop {
            let round = self.round(rules).await?;
            println!(
                "  {phase:<8} round {:>2}: {:>8.1} ms; {} transitions, {} recoveries recorded, {} held; rows written {}",
                rounds.len() + 1,
                ms(round.took),
                round.transitions,
                round.recoveries,
                round.held,
                round.rows
            );
            rounds.push(round);
            let nodes =
                node::Entity::find().filter(node::Column::Name.is_in(hosts.iter().cloned())).all(self.db).await?;
            if nodes.len() == hosts.len() && nodes.iter().all(&done) {
                return Ok(rounds);
            }
            anyhow::ensure!(rounds.len() < MAX_PHASE_ROUNDS, "{phase}: not done after {MAX_PHASE_ROUNDS} rounds");
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The value at `quantile` (0..=1) of sorted `values`, nearest rank.
fn quantile(sorted: &[Duration], quantile: f64) -> Duration {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct PhaseSummary {
    name: &'static str,
    rounds: usize,
    median: Duration,
    p95: Duration,
    max: Duration,
    cloud_median: Duration,
    rows_total: u64,
    rows_max: u64,
    calls_per_round: f64,
}

fn summarize(name: &'static str, rounds: &[Round]) -> PhaseSummary {
    let mut took: Vec<Duration> = rounds.iter().map(|round| round.took).collect();
    took.sort();
    let mut cloud: Vec<Duration> = rounds.iter().map(|round| round.cloud_call).collect();
    cloud.sort();
    PhaseSummary {
        name,
        rounds: rounds.len(),
        median: quantile(&took, 0.5),
        p95: quantile(&took, 0.95),
        max: took[took.len() - 1],
        cloud_median: quantile(&cloud, 0.5),
        rows_total: rounds.iter().map(|round| round.rows.total()).sum(),
        rows_max: rounds.iter().map(|round| round.rows.total()).max().unwrap_or(0),
        calls_per_round: rounds.iter().map(|round| round.cloud_calls).sum::<u64>() as f64 / rounds.len() as f64,
    }
}

/// `VmHWM` (peak) and `VmRSS` (now) of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn measure(db: &DatabaseConnection, args: &TrackerArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let sim = SimCloud::new(SimSettings {
        call_latency: Duration::ZERO,
        service_down_time: Duration::ZERO,
        ..SimSettings::default()
    });
    let width = args.hosts.to_string().len();
    let hosts: Vec<String> = (0..args.hosts).map(|index| format!("compute-{index:0width$}")).collect();
    for host in &hosts {
        sim.add_host(host, true);
    }
    for index in 0..args.servers {
        sim.add_server(&format!("server-{index}"), &hosts[index % hosts.len()], None, false);
    }
    let synced = Instant::now();
    aos_ha::cloud::sync_nodes_from(db, &sim, |_| true, "bench@tracker").await?;
    let sync_took = synced.elapsed();
    let (_, rss_after_setup) = memory();
    println!(
        "tracker on {}: {} hosts, {} servers; set-up {:.1} s (node sync of {} hosts {:.0} ms); RSS {:.1} MiB",
        args.backend.name(),
        args.hosts,
        args.servers,
        started.elapsed().as_secs_f64(),
        args.hosts,
        ms(sync_took),
        rss_after_setup
    );

    let killed = ((args.hosts as f64 * args.kill_percent / 100.0).ceil() as usize).max(1);
    // Spread over the cloud: every `stride`-th host, the storm's shifted by half a stride.
    let stride = (args.hosts / killed).max(2);
    let failing: Vec<String> = (0..killed).map(|index| hosts[index * stride].clone()).collect();
    let storming: Vec<String> = (0..killed).map(|index| hosts[index * stride + stride / 2].clone()).collect();
    let counts = counts(db).await?;
    let mut bench = Bench { db, sim, counts };
    let let_through = TrackerRules {
        mutex: args.mutex.max(1),
        mutex_up: 1,
        max_down_hosts: u32::try_from(args.hosts).unwrap_or(u32::MAX),
        allow_evacuate_host: true,
        deny_evacuate: Default::default(),
    };
    let storm_guard = TrackerRules { max_down_hosts: 1, ..let_through.clone() };

    // 1. Nothing changes. The first round is a warm-up (caches, prepared statements).
    bench.round(&let_through).await?;
    let mut steady = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        steady.push(bench.round(&let_through).await?);
    }
    println!("  steady   {} rounds after one warm-up round", steady.len());

    // 2. Hosts die; the storm guard lets them through.
    for host in &failing {
        bench.sim.kill(host);
    }
    println!(
        "  failure  {killed} hosts killed ({}% of {}), max_down_hosts {}",
        args.kill_percent, args.hosts, let_through.max_down_hosts
    );
    let failure = bench.rounds_until("failure", &let_through, &failing, |node| node.state == NodeState::Down).await?;
    let tasks = task::Entity::find().count(db).await?;
    anyhow::ensure!(tasks == killed as u64, "{tasks} recovery tasks recorded for {killed} confirmed-down hosts");

    // 3. They come back (no worker ran the recoveries: the nodes are still down).
    for host in &failing {
        bench.sim.revive(host);
    }
    let back_up = bench.rounds_until("back up", &let_through, &failing, |node| node.state == NodeState::Up).await?;

    // 4. As many other hosts die, with the storm guard at 1.
    for host in &storming {
        bench.sim.kill(host);
    }
    println!("  storm    {killed} other hosts killed, max_down_hosts 1");
    let storm = bench.rounds_until("storm", &storm_guard, &storming, |node| node.state == NodeState::Down).await?;
    let tasks_after = task::Entity::find().count(db).await?;
    anyhow::ensure!(tasks_after == tasks, "the storm guard let {} recoveries through", tasks_after - tasks);

    // The floor of a round that writes nothing: the same cloud call and the same read of
    // every node in a write transaction, without the tracker's per-node updates.
    let mut floor = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let started = Instant::now();
        let cloud = Instant::now();
        let observed = bench.sim.compute_hosts().await?;
        let cloud_call = cloud.elapsed();
        let transaction = aos_db::begin_write(db).await?;
        let nodes = node::Entity::find().filter(node::Column::RemovedFromNova.eq(false)).all(&transaction).await?;
        transaction.commit().await?;
        anyhow::ensure!(nodes.len() == observed.len(), "{} nodes for {} hosts", nodes.len(), observed.len());
        floor.push(Round {
            took: started.elapsed(),
            cloud_call,
            rows: Rows::default(),
            cloud_calls: 1,
            transitions: 0,
            recoveries: 0,
            held: 0,
        });
    }

    let (peak, now) = memory();
    let phases = [
        summarize("steady", &steady),
        summarize("failure", &failure),
        summarize("back up", &back_up),
        summarize("storm", &storm),
        summarize("floor", &floor),
    ];
    println!();
    println!(
        "{:<8} {:>6} {:>10} {:>8} {:>8} {:>12} {:>11} {:>10} {:>12}",
        "phase", "rounds", "median ms", "p95 ms", "max ms", "cloud ms p50", "rows total", "rows max", "calls/round"
    );
    for phase in &phases {
        println!(
            "{:<8} {:>6} {:>10.1} {:>8.1} {:>8.1} {:>12.2} {:>11} {:>10} {:>12.1}",
            phase.name,
            phase.rounds,
            ms(phase.median),
            ms(phase.p95),
            ms(phase.max),
            ms(phase.cloud_median),
            phase.rows_total,
            phase.rows_max,
            phase.calls_per_round
        );
    }
    println!("floor: the same cloud call and read of every node, no writes (what a steady round could cost)");
    let calls: Vec<String> = bench.sim.calls().iter().map(|(call, count)| format!("{call} {count}")).collect();
    println!();
    println!("cloud calls in all: {}", calls.join(", "));
    println!("memory: peak RSS (VmHWM) {peak:.1} MiB, RSS now {now:.1} MiB");
    let steady = &phases[0];
    println!(
        "tracker: {} {} hosts steady round median {:.1} ms (p95 {:.1} ms), peak RSS {:.0} MiB",
        args.backend.name(),
        args.hosts,
        ms(steady.median),
        ms(steady.p95),
        peak
    );
    Ok(())
}
