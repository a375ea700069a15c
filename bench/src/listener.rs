//! `listener`: Nova notifications consumed into the database per second, through the
//! listener's own consume-and-record loop (`aos_listener::consume`, the daemon's code, run in
//! this process).
//!
//! Set-up: a fresh database (MariaDB by default, or SQLite) migrated to the latest schema; a
//! fresh topic exchange and durable queue on the test broker (`AOS_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2F`); `--messages` notifications made from the real
//! samples (`services/listener/samples`, in the proportions of the captured scenario, each
//! with its own `message_id`) published with pipelined publisher confirms and persistent
//! delivery, all before the listener starts, so the measurement is the listener draining a
//! backlog. Headline: messages recorded per second, from the listener's start until the last
//! one is committed.
//!
//! Then, to see what bounds it, each stage alone on the same messages: the broker (consume
//! and multiple-ack in batches, no parsing, no database), parsing (one thread), and the
//! database (`aos_db::record_notifications` of ready rows in batches, one writer).
//! Everything is removed at the end (exchange, queues, database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_bus::{BatchConsumer, BatchLimits, ConfirmedPublisher, NextBatch, TopicSubscription};
use aos_db::testing::TestDatabase;
use aos_listener::samples::Generator;
use aos_listener::{Counters, ListenerSettings};
use tokio_util::sync::CancellationToken;

/// The environment variable naming the broker (an AMQP URI with its vhost).
const AMQP_URL_ENV: &str = "AOS_TEST_AMQP_URL";
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2F";
/// The most the drain may take before the bench gives up (a liveness bound, not a figure).
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

#[derive(clap::Args)]
pub struct ListenerArgs {
    /// Notifications published and consumed.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Database the listener records into.
    #[arg(long, value_enum, default_value_t = ListenerBackend::Mysql)]
    backend: ListenerBackend,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListenerBackend {
    Mysql,
    Sqlite,
}

impl ListenerBackend {
    fn name(self) -> &'static str {
        match self {
            ListenerBackend::Mysql => "mysql",
            ListenerBackend::Sqlite => "sqlite",
        }
    }
}

pub fn run(args: ListenerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: ListenerArgs) -> anyhow::Result<()> {
    let database = match args.backend {
        ListenerBackend::Mysql => TestDatabase::mysql().await,
        ListenerBackend::Sqlite => TestDatabase::sqlite().await,
    }
    .with_context(|| format!("cannot create a {} database", args.backend.name()))?;
    let uri = std::env::var(AMQP_URL_ENV).unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let connection = aos_bus::connect(&uri, "aos-cloud-manager-bench listener").await?;
    let name = format!("aos-bench-listener-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let subscription = TopicSubscription {
        exchange: format!("{name}-nova"),
        queue: format!("{name}-notifications"),
        routing_keys: vec!["versioned_notifications.info".to_owned(), "versioned_notifications.error".to_owned()],
        durable: true,
    };
    let broker_only = TopicSubscription { queue: format!("{name}-broker-only"), ..subscription.clone() };
    let result = async {
        let db = database.connect_migrated().await.context("cannot migrate the database")?;
        let result = measure_with(&args, &db, &connection, &uri, &subscription, &broker_only).await;
        db.close().await?;
        result
    }
    .await;
    for created in [&subscription, &broker_only] {
        if let Err(error) = aos_bus::delete_topic_subscription(&connection, created).await {
            eprintln!("cannot delete {} / {}: {error}", created.exchange, created.queue);
        }
    }
    aos_bus::close(&connection).await;
    database.cleanup().await;
    result
}

async fn measure_with(
    args: &ListenerArgs,
    db: &aos_db::DatabaseConnection,
    connection: &aos_bus::Connection,
    uri: &str,
    subscription: &TopicSubscription,
    broker_only: &TopicSubscription,
) -> anyhow::Result<()> {
    let count = args.messages;
    let generator = Generator::versioned_mix().map_err(anyhow::Error::msg)?;
    let messages: Vec<(String, Vec<u8>)> = (0..count)
        .map(|index| {
            let (routing_key, body) = generator.message(index, &format!("bench-{index:08}"));
            (routing_key.to_owned(), body)
        })
        .collect();
    let bytes: usize = messages.iter().map(|(_, body)| body.len()).sum();

    aos_bus::declare_topic_subscription(connection, subscription).await?;
    let publisher = ConfirmedPublisher::open(connection, &subscription.exchange, 1000).await?;
    let started = Instant::now();
    publisher.publish_routed(messages.iter().map(|(key, body)| (key.as_str(), body.as_slice()))).await?;
    let publish_time = started.elapsed();
    let depth = aos_bus::queue_depth(connection, &subscription.queue).await?;
    anyhow::ensure!(depth as usize == count, "{depth} messages queued, {count} published");

    // The headline: the listener's loop drains the backlog into the database.
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let settings = ListenerSettings {
        broker_uri: uri.to_owned(),
        connection_name: "aos-cloud-manager-bench listener".to_owned(),
        subscription: subscription.clone(),
        limits: BatchLimits::default(),
        actor: "bench".to_owned(),
    };
    let readiness = aos_daemon::Readiness::new(aos_listener::ROLE);
    let cpu_before = CpuSample::take();
    let started = Instant::now();
    let listener =
        tokio::spawn(aos_listener::consume(db.clone(), settings, readiness, counters.clone(), shutdown.clone()));
    loop {
        let seen = counters.snapshot();
        if (seen.recorded + seen.duplicates) as usize >= count {
            break;
        }
        anyhow::ensure!(!listener.is_finished(), "the listener stopped early");
        anyhow::ensure!(started.elapsed() < DRAIN_LIMIT, "not drained after {DRAIN_LIMIT:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_time = started.elapsed();
    let cpu_during = CpuSample::between(cpu_before, CpuSample::take());
    shutdown.cancel();
    listener.await?;
    let totals = counters.snapshot();
    let stored: u64 = aos_db::count_notifications(db).await?.values().sum();
    anyhow::ensure!(stored as usize == count, "{stored} notifications stored, {count} published");

    // Each stage alone.
    let broker_time = broker_only_drain(connection, broker_only, &messages).await?;
    let bodies: Vec<Vec<u8>> = messages.into_iter().map(|(_, body)| body).collect();
    let started = Instant::now();
    let mut rows = aos_listener::record::prepare(&bodies);
    let parse_time = started.elapsed();
    for (index, row) in rows.iter_mut().enumerate() {
        row.message_id = format!("db-only-{index:08}");
    }
    let started = Instant::now();
    for batch in rows.chunks(BatchLimits::default().max_messages) {
        aos_db::record_notifications(db, "bench", batch).await?;
    }
    let db_time = started.elapsed();

    let per_second = |time: Duration| count as f64 / time.as_secs_f64().max(f64::EPSILON);
    let share = |time: Duration| 100.0 * time.as_secs_f64() / drain_time.as_secs_f64().max(f64::EPSILON);
    println!(
        "messages: {count} ({:.1} KiB each on average), backend {}",
        bytes as f64 / count as f64 / 1024.0,
        args.backend.name()
    );
    println!("{:<44} {:>9} {:>12}", "stage", "seconds", "messages/s");
    println!(
        "{:<44} {:>9.3} {:>12.0}",
        "publish (confirms, window 1000, persistent)",
        publish_time.as_secs_f64(),
        per_second(publish_time)
    );
    println!(
        "{:<44} {:>9.3} {:>12.0}",
        "listener: consume + parse + record + ack",
        drain_time.as_secs_f64(),
        per_second(drain_time)
    );
    println!(
        "{:<44} {:>9.3} {:>12.0}",
        "  alone: broker (consume + multiple ack)",
        broker_time.as_secs_f64(),
        per_second(broker_time)
    );
    println!(
        "{:<44} {:>9.3} {:>12.0}",
        "  alone: parse (one thread)",
        parse_time.as_secs_f64(),
        per_second(parse_time)
    );
    println!(
        "{:<44} {:>9.3} {:>12.0}",
        "  alone: database (record_notifications)",
        db_time.as_secs_f64(),
        per_second(db_time)
    );
    println!(
        "in the listener run: {} batches of {:.0} on average; parsing busy {:.0} % and the database writer busy {:.0} % of the run (they overlap)",
        totals.batches,
        count as f64 / totals.batches.max(1) as f64,
        share(totals.parse_time),
        share(totals.record_time)
    );
    if let Some(cpu) = cpu_during {
        let per_wall = |seconds: f64| seconds / drain_time.as_secs_f64().max(f64::EPSILON);
        println!(
            "CPU during the listener run, in cores busy ({} cores): listener {:.2}, mariadbd {:.2}, rabbitmq {:.2}, everything else {:.2}, idle {:.2}",
            cpu.cores,
            per_wall(cpu.own),
            per_wall(cpu.mariadb),
            per_wall(cpu.rabbitmq),
            per_wall((cpu.busy - cpu.own - cpu.mariadb - cpu.rabbitmq).max(0.0)),
            per_wall(cpu.idle),
        );
    }
    println!("listener: {} {:.0} notifications/s", args.backend.name(), per_second(drain_time));
    Ok(())
}

/// Publishes the same messages to a second queue and drains it as the listener's consumer
/// does (batches, prefetch, multiple ack) without parsing or recording: the broker's share.
async fn broker_only_drain(
    connection: &aos_bus::Connection,
    subscription: &TopicSubscription,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<Duration> {
    aos_bus::declare_topic_subscription(connection, subscription).await?;
    // Bind only this queue: publish through the default exchange straight to it.
    let publisher = ConfirmedPublisher::open(connection, "", 1000).await?;
    publisher.publish_routed(messages.iter().map(|(_, body)| (subscription.queue.as_str(), body.as_slice()))).await?;
    publisher.close().await;
    let shutdown = CancellationToken::new();
    let mut consumer =
        BatchConsumer::start(connection, &subscription.queue, "aos-bench broker-only", BatchLimits::default()).await?;
    let started = Instant::now();
    let mut drained = 0;
    while drained < messages.len() {
        anyhow::ensure!(started.elapsed() < DRAIN_LIMIT, "broker-only drain stalled at {drained}");
        match consumer.next_batch(&shutdown).await {
            NextBatch::Batch { batch, .. } => {
                drained += batch.bodies.len();
                batch.ack.ack().await?;
            }
            other => anyhow::bail!("broker-only consumer ended: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    consumer.close().await;
    Ok(elapsed)
}

/// CPU seconds used so far, from `/proc` (Linux): this process, the MariaDB server
/// (`mariadbd`), RabbitMQ (`beam.smp`), and the whole machine. Everything on this machine
/// shares two cores, so where the CPU goes is what bounds the listener.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    own: f64,
    mariadb: f64,
    rabbitmq: f64,
    busy: f64,
    idle: f64,
    cores: usize,
}

impl CpuSample {
    /// `None` where `/proc` cannot be read (the breakdown is then left out).
    fn take() -> Option<Self> {
        const TICKS_PER_SECOND: f64 = 100.0; // USER_HZ on Linux
        let process_seconds = |pid: &str| -> Option<f64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which is in parentheses and may contain spaces).
            let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS_PER_SECOND)
        };
        let mut sample = CpuSample { own: process_seconds("self")?, ..CpuSample::default() };
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|byte| byte.is_ascii_digit()) {
                continue;
            }
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match command.trim() {
                "mariadbd" | "mysqld" => sample.mariadb += process_seconds(&pid).unwrap_or(0.0),
                "beam.smp" => sample.rabbitmq += process_seconds(&pid).unwrap_or(0.0),
                _ => {}
            }
        }
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<f64> =
            stat.lines().next()?.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
        let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0.0);
        sample.idle = idle / TICKS_PER_SECOND;
        sample.busy = (ticks.iter().take(8).sum::<f64>() - idle) / TICKS_PER_SECOND;
        sample.cores = stat.lines().filter(|line| line.starts_with("cpu") && !line.starts_with("cpu ")).count();
        Some(sample)
    }

    /// What was used from `before` to `after`.
    fn between(before: Option<Self>, after: Option<Self>) -> Option<Self> {
        let (before, after) = (before?, after?);
        Some(CpuSample {
            own: after.own - before.own,
            mariadb: after.mariadb - before.mariadb,
            rabbitmq: after.rabbitmq - before.rabbitmq,
            busy: after.busy - before.busy,
            idle: after.idle - before.idle,
            cores: after.cores,
        })
    }
}
