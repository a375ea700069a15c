//! RabbitMQ restarted while notifications flow: a "Nova" publishes real sample notifications
//! continuously with publisher confirms (and, like oslo.messaging, publishes again what was
//! not confirmed once it has reconnected); the broker — a node of this test's own
//! (`aos_testkit::ScratchBroker`), never the machine's shared one — is stopped in the middle
//! and started again; the listener daemon reconnects with backoff. At the end every
//! notification is in the database exactly once.
//!
//! With a durable exchange (Nova with `[oslo_messaging_rabbit] amqp_durable_queues = true`)
//! the binding of our durable queue survives the restart and nothing confirmed can be lost,
//! whenever it is published. With Nova's default, a transient exchange, the exchange and the
//! binding vanish with the restart and what Nova publishes before the listener has bound
//! again is unroutable (docs/adr/0007-listener.md, "Broker restarts"): that variant checks
//! that what was already in our queue survives and that the listener binds again, with the
//! publisher resuming once the listener consumes again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_bus::ConfirmedPublisher;
use aos_bus::lapin::options::ExchangeDeclareOptions;
use aos_bus::lapin::types::FieldTable;
use aos_listener::samples::Generator;
use aos_testkit::testing::TestDatabase;
use aos_testkit::{DaemonProcess, Scratch, ScratchBroker, test_config, wait_until};

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-listener");
const MESSAGES: usize = 4_000;
/// Messages per publish call: the unit that is confirmed, or published again.
const CHUNK: usize = 25;
const EXCHANGE: &str = "nova";

/// How Nova declares its exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NovaExchange {
    /// `amqp_durable_queues = true`.
    Durable,
    /// oslo.messaging's default.
    Transient,
}

#[derive(Clone, Copy, Debug)]
enum Restart {
    /// `rabbitmqctl stop`, then start again.
    Graceful,
    /// SIGKILL, then start again.
    Crash,
}

/// What the publisher has done so far.
#[derive(Default)]
struct Progress {
    /// Messages confirmed by the broker (a prefix of the sequence: chunks are confirmed in order).
    confirmed: AtomicUsize,
    /// Chunks published again after a failed publish.
    republished_chunks: AtomicUsize,
    /// With a transient exchange: the publisher waits for this after a reconnect.
    listener_bound_again: std::sync::atomic::AtomicBool,
}

/// Publishes `messages` in chunks, paced, each chunk until the broker confirms it: after a
/// failure it reconnects (the broker may be down for a while) and publishes the chunk again.
async fn publish_like_nova(
    uri: String,
    exchange: NovaExchange,
    messages: Arc<Vec<(String, Vec<u8>)>>,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let mut next = 0;
    let mut reconnecting = false;
    let started = Instant::now();
    while next < messages.len() {
        let connection = match aos_bus::connect(&uri, "nova (test publisher)").await {
            Ok(connection) => connection,
            Err(_) => {
                anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the broker never came back");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if reconnecting && exchange == NovaExchange::Transient {
            while !progress.listener_bound_again.load(Ordering::SeqCst) {
                anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the listener never came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let outcome: anyhow::Result<()> = async {
            // Every step bounded: a broker going away mid-call must not hang the publisher.
            let step = Duration::from_secs(30);
            tokio::time::timeout(step, declare_novas_exchange(&connection, exchange)).await.context("declare")??;
            let publisher = tokio::time::timeout(step, ConfirmedPublisher::open(&connection, EXCHANGE, CHUNK))
                .await
                .context("open")??;
            while next < messages.len() {
                let chunk = &messages[next..(next + CHUNK).min(messages.len())];
                let routed = routed(chunk);
                tokio::time::timeout(Duration::from_secs(30), publisher.publish_routed(routed))
                    .await
                    .context("no confirm within 30 s")??;
                next += chunk.len();
                progress.confirmed.store(next, Ordering::SeqCst);
                // ~2,500 notifications/s: a steady flow rather than one burst.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            publisher.close().await;
            Ok(())
        }
        .await;
        aos_bus::close(&connection).await;
        if outcome.is_err() {
            progress.republished_chunks.fetch_add(1, Ordering::SeqCst);
            reconnecting = true;
        }
    }
    Ok(())
}

/// `(routing key, body)` pairs borrowed from `messages`.
fn routed(messages: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    let mut routed = Vec::with_capacity(messages.len());
    for (routing_key, body) in messages {
        routed.push((routing_key.as_str(), body.as_slice()));
    }
    routed
}

/// What oslo.messaging declares before publishing: exchange `nova`, topic, durable per
/// `amqp_durable_queues`.
async fn declare_novas_exchange(connection: &aos_bus::Connection, exchange: NovaExchange) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    let options =
        ExchangeDeclareOptions { durable: exchange == NovaExchange::Durable, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(EXCHANGE.into(), aos_bus::lapin::ExchangeKind::Topic, options, FieldTable::default())
        .await?;
    let _ = channel.close(200, "OK".into()).await;
    Ok(())
}

async fn rows(db: &aos_db::DatabaseConnection) -> anyhow::Result<u64> {
    Ok(aos_db::count_notifications(db).await?.values().sum())
}

async fn restarted_while_notifications_flow(
    database: &TestDatabase,
    exchange: NovaExchange,
    restart: Restart,
) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let mut broker = ScratchBroker::start().await?;
    let scratch = Scratch::new()?;
    let queue = format!("aos-test-restart-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let base = scratch.write_config(&test_config(database, "")?)?;
    let listener_conf = scratch.path().join("listener.conf");
    std::fs::write(
        &listener_conf,
        format!(
            "[listener]\nnova_transport_url = {}\nnotification_exchange = {EXCHANGE}\nqueue_name = {queue}\ndurability = True\n",
            broker.transport_url()
        ),
    )?;
    // Nova runs already: its exchange exists before the listener starts.
    let connection = aos_bus::connect(&broker.amqp_uri(), "nova (test publisher)").await?;
    declare_novas_exchange(&connection, exchange).await?;
    aos_bus::close(&connection).await;
    let mut listener =
        DaemonProcess::spawn_with_configs(BINARY, &[&base, &listener_conf], scratch.path().join("listener.log"))?;
    wait_until(Duration::from_secs(60), "the listener to consume", || async {
        Ok(listener.log().contains("consuming Nova's notifications").then_some(()))
    })
    .await
    .with_context(|| listener.log())?;

    let generator = Generator::versioned_mix().map_err(anyhow::Error::msg)?;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let messages: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|index| {
            let (routing_key, body) = generator.message(index, &format!("restart-{run}-{index}"));
            (routing_key.to_owned(), body)
        })
        .collect();
    let progress = Arc::new(Progress::default());
    // On a thread and runtime of its own, as Nova is a process of its own.
    let (uri, shared) = (broker.amqp_uri(), progress.clone());
    let publisher = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(publish_like_nova(
            uri,
            exchange,
            Arc::new(messages),
            shared,
        ))
    });

    // Restart once a quarter is confirmed and the listener has recorded some.
    wait_until(Duration::from_secs(120), "a quarter of the messages confirmed and some recorded", || async {
        Ok((progress.confirmed.load(Ordering::SeqCst) >= MESSAGES / 4 && rows(&db).await? > 0).then_some(()))
    })
    .await?;
    let confirmed_before = progress.confirmed.load(Ordering::SeqCst);
    let recorded_before = rows(&db).await?;
    match restart {
        Restart::Graceful => broker.stop().await?,
        Restart::Crash => broker.kill().await?,
    }
    let sessions_before = listener.log().matches("consuming Nova's notifications").count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let starting_at = Instant::now();
    broker.start_again().await?;
    let booted_in = starting_at.elapsed();
    wait_until(Duration::from_secs(120), "the listener to consume again", || async {
        Ok((listener.log().matches("consuming Nova's notifications").count() > sessions_before).then_some(()))
    })
    .await
    .with_context(|| listener.log())?;
    let consuming_after = starting_at.elapsed();
    progress.listener_bound_again.store(true, Ordering::SeqCst);

    // Polled rather than joined on a blocking task: a stuck publisher fails the test instead
    // of holding the runtime's shutdown.
    wait_until(Duration::from_secs(300), "the publisher to finish", || async {
        Ok(publisher.is_finished().then_some(()))
    })
    .await?;
    publisher.join().map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
    assert_eq!(progress.confirmed.load(Ordering::SeqCst), MESSAGES, "the broker confirmed every message");
    let outcome = wait_until(Duration::from_secs(120), "every message recorded", || async {
        Ok((rows(&db).await? >= MESSAGES as u64).then_some(()))
    })
    .await;
    if let Err(error) = outcome {
        anyhow::bail!("{error}: {} rows\n{}", rows(&db).await?, listener.log());
    }
    listener.sigterm()?;
    assert!(listener.wait_exit(Duration::from_secs(30)).await?.success(), "{}", listener.log());

    let recorded: BTreeSet<String> = aos_db::list_notifications(&db, None, (MESSAGES * 2) as u64)
        .await?
        .into_iter()
        .map(|row| row.message_id)
        .collect();
    let total = rows(&db).await?;
    let missing: Vec<usize> =
        (0..MESSAGES).filter(|index| !recorded.contains(&format!("restart-{run}-{index}"))).collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(total, MESSAGES as u64, "each message exactly once");
    let summary = listener.log().lines().rev().find(|line| line.contains("listener stopped")).map(str::to_owned);
    eprintln!(
        "{exchange:?} exchange, {restart:?} restart: {MESSAGES} published and confirmed ({} chunks of {CHUNK} \
         published again), {confirmed_before} confirmed and {recorded_before} recorded before the restart; the broker \
         booted in {booted_in:.1?} and the listener consumed again {consuming_after:.1?} after the broker was started \
         again; lost 0, duplicated 0; {}",
        progress.republished_chunks.load(Ordering::SeqCst),
        summary.unwrap_or_default()
    );
    db.close().await?;
    drop(broker);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_gracefully_mid_stream_loses_and_duplicates_nothing_on_mariadb() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = restarted_while_notifications_flow(&database, NovaExchange::Durable, Restart::Graceful).await;
    database.cleanup().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_and_restarted_loses_and_duplicates_nothing_on_sqlite() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    restarted_while_notifications_flow(&database, NovaExchange::Durable, Restart::Crash).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_novas_transient_exchange_what_was_queued_survives_a_restart_and_the_listener_binds_again_on_mariadb()
-> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = restarted_while_notifications_flow(&database, NovaExchange::Transient, Restart::Graceful).await;
    database.cleanup().await;
    outcome
}
