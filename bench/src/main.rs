//! `aos-cloud-manager-bench`: one subcommand per figure; each run prints its measurements and
//! ends with one line carrying the headline figure and its unit (see docs/benchmarks.md).
//!
//! `db`: rows written per second through the database layer (aos-db entities over sea-orm),
//! on a fresh database that is migrated first and dropped at the end, in three modes:
//! - `autocommit`: one `INSERT` per transaction (what a single recorded event costs);
//! - `batch100`: 100 single-row `INSERT`s per transaction (a job recording a burst);
//! - `multirow1000`: one multi-row `INSERT` of 1000 rows per statement (`insert_many`).
//!
//! The rows are `node_events` spread over a few `nodes`. The headline figure is `batch100` on
//! MariaDB (the production backend), or on SQLite when only SQLite was measured.
//!
//! `listener`: Nova notifications consumed from RabbitMQ into the database per second by the
//! listener's own loop (see the `listener` module).
//!
//! `tracker`: the node tracker's round on a large simulated cloud — steady state, hosts dying,
//! coming back, a storm — with its rows written, cloud calls and memory (see the `tracker`
//! module).
//!
//! `recovery`: one dead hypervisor's recovery on the real test cloud with real BMCs — kill to
//! down confirmed, evacuations issued and all servers back — ours against an operator's script
//! with no safety rule (see the `recovery` module).
//!
//! `api`: requests per second and p99 latency of `GET /v1/nodes` with 1,000 nodes and a cached
//! Keystone token (see the `api` module).
//!
//! `planner`: the balancing planner's time on one large unbalanced aggregate (see the
//! `planner` module).

mod api;
mod listener;
mod planner;
mod recovery;
mod tracker;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_db::entity::{NodeState, node, node_event};
use aos_db::testing::TestDatabase;
use aos_db::{DatabaseConnection, db_time};
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait, TransactionTrait};

#[derive(Parser)]
#[command(name = "aos-cloud-manager-bench", about = "Benchmarks of aos-cloud-manager, one subcommand per figure")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rows written per second through the db layer (node_events), per backend and mode.
    Db(DbArgs),
    /// Nova notifications consumed from RabbitMQ and recorded per second by the listener.
    Listener(listener::ListenerArgs),
    /// The node tracker's round on a simulated cloud of N hosts: time, rows written, memory.
    Tracker(tracker::TrackerArgs),
    /// One host's recovery on the real test cloud, ours against an operator's script.
    Recovery(recovery::RecoveryArgs),
    /// The balancing planner on one large aggregate: planning time, migrations, MB moved.
    Planner(planner::PlannerArgs),
    /// GET /v1/nodes through the whole API (cached Keystone token) on loopback: req/s, p99.
    Api(api::ApiArgs),
}

#[derive(clap::Args)]
struct DbArgs {
    /// Which database server to measure: MariaDB/MySQL (`AOS_TEST_MYSQL_URL`, default
    /// mysql://root@127.0.0.1:3306), a SQLite file in a temporary directory, or both.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// Rows written in each mode.
    #[arg(long, default_value_t = 5000)]
    rows: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    Mysql,
    Sqlite,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Mysql,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Autocommit,
    Batch100,
    MultiRow1000,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Autocommit, Mode::Batch100, Mode::MultiRow1000];

    fn name(self) -> &'static str {
        match self {
            Mode::Autocommit => "autocommit",
            Mode::Batch100 => "batch100",
            Mode::MultiRow1000 => "multirow1000",
        }
    }
}

/// The mode whose figure is the headline of `db`.
const HEADLINE_MODE: Mode = Mode::Batch100;

/// Nodes the events are spread over.
const NODES: usize = 4;

struct Measurement {
    backend: Backend,
    mode: Mode,
    rows: usize,
    elapsed: Duration,
}

impl Measurement {
    fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

fn main() -> ExitCode {
    // Both rustls providers may be compiled in; rustls then wants one chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Db(args) => db(args),
        Command::Listener(args) => listener::run(args),
        Command::Tracker(args) => tracker::run(args),
        Command::Recovery(args) => recovery::run(args),
        Command::Planner(args) => planner::run(args),
        Command::Api(args) => api::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn db(args: DbArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rows > 0, "--rows must be at least 1");
    let backends = match args.backend {
        BackendChoice::Mysql => vec![Backend::Mysql],
        BackendChoice::Sqlite => vec![Backend::Sqlite],
        BackendChoice::Both => vec![Backend::Mysql, Backend::Sqlite],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut measurements = Vec::new();
    println!("{:<8} {:<13} {:>8} {:>9} {:>10}", "backend", "mode", "rows", "seconds", "rows/s");
    for backend in backends {
        for measurement in runtime.block_on(measure_backend(backend, args.rows))? {
            println!(
                "{:<8} {:<13} {:>8} {:>9.3} {:>10.0}",
                measurement.backend.name(),
                measurement.mode.name(),
                measurement.rows,
                measurement.elapsed.as_secs_f64(),
                measurement.rows_per_second()
            );
            measurements.push(measurement);
        }
    }
    let headline = measurements
        .iter()
        .find(|measurement| measurement.mode == HEADLINE_MODE)
        .context("no measurement of the headline mode")?;
    println!("db: {} {} {:.0} rows/s", headline.backend.name(), headline.mode.name(), headline.rows_per_second());
    Ok(())
}

/// Creates a fresh database, migrates it, measures every mode, drops the database (also when
/// a measurement fails).
async fn measure_backend(backend: Backend, rows: usize) -> anyhow::Result<Vec<Measurement>> {
    let database = match backend {
        Backend::Mysql => TestDatabase::mysql().await,
        Backend::Sqlite => TestDatabase::sqlite().await,
    }
    .with_context(|| format!("cannot create a {} database", backend.name()))?;
    let result = async {
        let db = database.connect_migrated().await.context("cannot migrate the database")?;
        let result = measure_modes(&db, backend, rows).await;
        db.close().await?;
        result
    }
    .await;
    database.cleanup().await;
    result
}

async fn measure_modes(db: &DatabaseConnection, backend: Backend, rows: usize) -> anyhow::Result<Vec<Measurement>> {
    let node_ids = insert_nodes(db).await?;
    let mut measurements = Vec::new();
    for mode in Mode::ALL {
        let events: Vec<node_event::ActiveModel> =
            (0..rows).map(|index| new_event(node_ids[index % node_ids.len()], index)).collect();
        let started = Instant::now();
        write(db, mode, events).await.with_context(|| format!("{} {}", backend.name(), mode.name()))?;
        measurements.push(Measurement { backend, mode, rows, elapsed: started.elapsed() });
    }
    let stored = node_event::Entity::find().count(db).await?;
    let expected = rows * Mode::ALL.len();
    anyhow::ensure!(stored == expected as u64, "{stored} node_events stored, {expected} written");
    Ok(measurements)
}

async fn write(db: &DatabaseConnection, mode: Mode, events: Vec<node_event::ActiveModel>) -> anyhow::Result<()> {
    match mode {
        Mode::Autocommit => {
            for event in events {
                event.insert(db).await?;
            }
        }
        Mode::Batch100 => {
            for chunk in events.chunks(100) {
                let transaction = aos_db::begin_write(db).await?;
                for event in chunk {
                    event.clone().insert(&transaction).await?;
                }
                transaction.commit().await?;
            }
        }
        Mode::MultiRow1000 => {
            let mut events = events.into_iter().peekable();
            while events.peek().is_some() {
                let chunk: Vec<_> = events.by_ref().take(1000).collect();
                node_event::Entity::insert_many(chunk).exec(db).await?;
            }
        }
    }
    Ok(())
}

async fn insert_nodes(db: &DatabaseConnection) -> anyhow::Result<Vec<i64>> {
    let now = db_time(Utc::now());
    let transaction = db.begin().await?;
    let mut ids = Vec::with_capacity(NODES);
    for index in 0..NODES {
        let node = node::ActiveModel {
            name: Set(format!("compute-{index}.bench")),
            state: Set(NodeState::Up),
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
        .insert(&transaction)
        .await?;
        ids.push(node.id);
    }
    transaction.commit().await?;
    Ok(ids)
}

fn new_event(node_id: i64, index: usize) -> node_event::ActiveModel {
    node_event::ActiveModel {
        node_id: Set(node_id),
        occurred_at: Set(db_time(Utc::now())),
        kind: Set("state_changed".to_owned()),
        from_state: Set(Some(NodeState::Up.to_string())),
        to_state: Set(Some(NodeState::Suspect.to_string())),
        actor: Set("bench@localhost".to_owned()),
        reason: Set(format!("benchmark row {index}: nova reports the compute service down")),
        task_id: Set(None),
        details: Set(None),
        ..Default::default()
    }
}
