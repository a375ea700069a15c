//! `aos-cloud-manager-listener`: consumes Nova's versioned notifications from Nova's RabbitMQ
//! (`[listener] nova_transport_url`, or `[DEFAULT] transport_url` with the vhost replaced by
//! `[listener] nova_rabbit_vhost`) and records every one of them exactly once
//! (docs/adr/0007-listener.md).
//!
//! Shape: a consumer task takes deliveries in batches (up to 500 messages or 20 ms, prefetch
//! 2,000) and parses them ([`notification`], pure); one writer task records each batch in one
//! database transaction ([`record`], `aos_db::record_notifications`) and only after the
//! commit acknowledges it with one multiple-ack. The two overlap: the next batch is parsed
//! while the previous one commits. A message is acknowledged only once it is in the database,
//! and recorded at most once (unique `message_id`), so a crash anywhere loses nothing and
//! records nothing twice. A database failure requeues the batch and backs off; a broker
//! failure ends the session and reconnects with backoff; neither stops the daemon.

pub mod notification;
pub mod record;
#[cfg(any(test, feature = "samples"))]
pub mod samples;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_bus::{Backoff, BatchAck, BatchConsumer, BatchLimits, NextBatch, TopicSubscription};
use aos_daemon::{CheckState, DaemonContext, Readiness};
use aos_db::{DatabaseConnection, IncomingNotification};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use record::{Counters, CountersSnapshot};

pub const ROLE: &str = "listener";
/// The readiness check of the broker connection: `ok` while consuming.
pub const BROKER_CHECK: &str = "nova_broker";
/// The readiness check of the database, `failing` while batches cannot be recorded.
const DATABASE_CHECK: &str = "database";
/// Connection attempts while the broker is unreachable: 0.5 s doubling to 5 s. Short on
/// purpose: after a broker restart Nova's default (transient) exchange and our binding to it
/// are gone, and what Nova publishes before we bind again is dropped (ADR 0007, "Broker
/// restarts"); an attempt to a broker that is down costs one refused TCP connection.
fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(5))
}
/// A session that lasted this long was healthy: the next reconnect starts with a short delay.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// `[listener] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.listener.logfile.as_deref()
}

/// The AMQP URI of Nova's notification broker, from the configuration.
pub fn nova_broker_uri(config: &aos_config::Config) -> String {
    // Already resolved by the configuration: `[DEFAULT] transport_url` on `nova_rabbit_vhost`
    // unless `[listener] nova_transport_url` is set.
    config.listener.nova_transport_url.to_amqp_uri()
}

/// Everything the consume loop needs to know, from the configuration (or set directly by the
/// benchmark).
#[derive(Clone)]
pub struct ListenerSettings {
    /// Contains the password: never log it (`aos_bus::mask_uri`).
    pub broker_uri: String,
    /// Shown in RabbitMQ's management UI, for the connection and the consumer.
    pub connection_name: String,
    pub subscription: TopicSubscription,
    pub limits: BatchLimits,
    /// The actor of node events written from notifications.
    pub actor: String,
}

impl std::fmt::Debug for ListenerSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ListenerSettings")
            .field("broker_uri", &aos_bus::mask_uri(&self.broker_uri))
            .field("connection_name", &self.connection_name)
            .field("subscription", &self.subscription)
            .field("limits", &self.limits)
            .field("actor", &self.actor)
            .finish()
    }
}

impl ListenerSettings {
    /// `[listener]`: Nova's exchange `notification_exchange` (topic; used as Nova declared
    /// it, created non-durable only when absent), our queue `queue_name` (durable per
    /// `durability`) bound with `<notification_topic>.info` and `.error` (the priorities of
    /// Nova's versioned notifications). docs/adr/0007-listener.md, "Topology".
    pub fn from_config(config: &aos_config::Config, identity: &str) -> Self {
        let listener = &config.listener;
        let topic = &listener.notification_topic;
        Self {
            broker_uri: nova_broker_uri(config),
            connection_name: format!("aos-cloud-manager-listener@{identity}"),
            subscription: TopicSubscription {
                exchange: listener.notification_exchange.clone(),
                queue: listener.queue_name.clone(),
                routing_keys: vec![format!("{topic}.info"), format!("{topic}.error")],
                durable: listener.durability,
            },
            limits: BatchLimits::default(),
            actor: ROLE.to_owned(),
        }
    }
}

pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let shutdown = context.shutdown.clone();
    if let Some(port) = context.config.listener.status_port {
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        aos_daemon::status::serve_status(ROLE, address, context.readiness.clone(), shutdown.clone()).await?;
    }
    let settings = ListenerSettings::from_config(&context.config, &context.identity);
    let counters = Arc::new(Counters::default());
    consume(context.db.clone(), settings, context.readiness.clone(), counters.clone(), shutdown).await;
    let totals = counters.snapshot();
    tracing::info!(
        consumed = totals.consumed,
        recorded = totals.recorded,
        duplicates = totals.duplicates,
        malformed = totals.malformed,
        unknown = totals.unknown,
        batches = totals.batches,
        failed_batches = totals.failed_batches,
        reconnects = totals.reconnects,
        "listener stopped"
    );
    Ok(())
}

/// Consumes and records until `shutdown` is cancelled: connects (with backoff), declares the
/// topology, runs a session, and starts again when the broker connection is lost. Returns
/// once the last batch taken has been recorded and acknowledged (or handed back).
pub async fn consume(
    db: DatabaseConnection,
    settings: ListenerSettings,
    readiness: Readiness,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    readiness.set(BROKER_CHECK, CheckState::Pending);
    let mut backoff = reconnect_backoff();
    let mut connected_before = false;
    while !shutdown.is_cancelled() {
        let failures = readiness.clone();
        let Some(connection) = aos_bus::connect_retrying(
            &settings.broker_uri,
            &settings.connection_name,
            &shutdown,
            reconnect_backoff(),
            |error| {
                failures.set(BROKER_CHECK, CheckState::Failing(error.to_string()));
            },
        )
        .await
        else {
            break;
        };
        if connected_before {
            Counters::add(&counters.reconnects, 1);
        }
        connected_before = true;
        let started = Instant::now();
        let ended = session(&connection, &db, &settings, &readiness, &counters, &shutdown).await;
        aos_bus::close(&connection).await;
        let Err(reason) = ended else { continue };
        tracing::warn!(%reason, "consuming Nova's notifications stopped; reconnecting");
        readiness.set(BROKER_CHECK, CheckState::Failing(format!("{reason}; reconnecting")));
        if started.elapsed() > HEALTHY_SESSION {
            backoff = reconnect_backoff();
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// A parsed batch on its way to the writer, with the acknowledgement to send after commit.
struct Prepared {
    rows: Vec<IncomingNotification>,
    ack: BatchAck,
}

/// One connection's life: declare, consume, hand batches to the writer. `Ok` when stopped by
/// shutdown (everything taken is recorded and acknowledged), `Err` with the reason when the
/// broker side failed.
async fn session(
    connection: &aos_bus::Connection,
    db: &DatabaseConnection,
    settings: &ListenerSettings,
    readiness: &Readiness,
    counters: &Arc<Counters>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let subscription = &settings.subscription;
    let report = aos_bus::declare_topic_subscription(connection, subscription).await.map_err(|error| {
        format!("cannot declare exchange {} / queue {}: {error}", subscription.exchange, subscription.queue)
    })?;
    for warning in report.warnings() {
        tracing::warn!("{warning}");
    }
    let mut consumer =
        BatchConsumer::start(connection, &subscription.queue, &settings.connection_name, settings.limits)
            .await
            .map_err(|error| format!("cannot consume from queue {}: {error}", subscription.queue))?;
    readiness.set(BROKER_CHECK, CheckState::Ok);
    tracing::info!(exchange = %subscription.exchange, queue = %subscription.queue, "consuming Nova's notifications");

    // Capacity 1: one batch recording, one parsed and waiting; the prefetch window bounds
    // what is held unacknowledged.
    let (to_writer, from_consumer) = mpsc::channel::<Prepared>(1);
    let writer = tokio::spawn(write_batches(
        db.clone(),
        settings.actor.clone(),
        from_consumer,
        counters.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let ended = loop {
        // Take the next batch only once the writer can accept it: while the writer is busy,
        // deliveries pile up in the prefetch window and the batch taken next is a full one
        // (fewer, larger transactions exactly when the database is the bottleneck).
        let permit = tokio::select! {
            permit = to_writer.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break Err("the batch writer stopped".to_owned()),
            },
            _ = shutdown.cancelled() => break Ok(()),
        };
        match consumer.next_batch(shutdown).await {
            NextBatch::Batch { batch, stop_after } => {
                Counters::add(&counters.consumed, batch.bodies.len());
                let started = Instant::now();
                let bodies = batch.bodies;
                // Parsing is CPU work (two JSON decodes per message): off the async workers.
                let rows = match tokio::task::spawn_blocking(move || record::prepare(&bodies)).await {
                    Ok(rows) => rows,
                    Err(error) => break Err(format!("parsing a batch failed: {error}")),
                };
                Counters::add_time(&counters.parse_nanos, started.elapsed());
                permit.send(Prepared { rows, ack: batch.ack });
                if stop_after {
                    break Ok(());
                }
            }
            NextBatch::Stopped => break Ok(()),
            NextBatch::Ended(Some(error)) => break Err(format!("the broker connection failed: {error}")),
            NextBatch::Ended(None) => break Err("the broker cancelled the consumer".to_owned()),
        }
    };
    if ended.is_ok() {
        // Stop the broker sending more; what was prefetched and not taken is requeued when
        // the channel closes.
        let _ = consumer.cancel().await;
    }
    drop(to_writer);
    if let Err(error) = writer.await {
        tracing::error!(%error, "the batch writer failed");
    }
    consumer.close().await;
    ended
}

/// Records batches in the order they were taken and acknowledges each after its commit. A
/// batch that cannot be recorded is handed back to the queue (`requeue`) and the writer backs
/// off before the next one; it never drops a batch.
async fn write_batches(
    db: DatabaseConnection,
    actor: String,
    mut batches: mpsc::Receiver<Prepared>,
    counters: Arc<Counters>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let mut failing = false;
    while let Some(prepared) = batches.recv().await {
        match record::record_prepared(&db, &actor, &prepared.rows, &counters).await {
            Ok(_) => {
                if failing {
                    failing = false;
                    readiness.set(DATABASE_CHECK, CheckState::Ok);
                    tracing::info!("recording notifications again");
                    backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
                }
                if let Err(error) = prepared.ack.ack().await {
                    // Recorded but not acknowledged: the broker redelivers the batch and the
                    // unique message ids make it a no-op.
                    tracing::warn!(%error, "cannot acknowledge a recorded batch (the broker redelivers it)");
                }
            }
            Err(error) => {
                Counters::add(&counters.failed_batches, 1);
                failing = true;
                tracing::warn!(error = %format!("{error:#}"), messages = prepared.rows.len(), "cannot record a batch; handing it back to the queue");
                readiness.set(DATABASE_CHECK, CheckState::Failing(format!("cannot record notifications: {error}")));
                if let Err(error) = prepared.ack.requeue().await {
                    tracing::debug!(%error, "cannot requeue a batch (it returns to the queue with its channel)");
                }
                if !shutdown.is_cancelled() {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_never_show_the_broker_password() {
        let loaded = aos_config::load_from_str(&[(
            "test.conf",
            "[listener]\nnova_transport_url = rabbit://nova:s3cret@127.0.0.1:5672/nova\n",
        )])
        .expect("valid");
        let settings = super::ListenerSettings::from_config(&loaded.config, "test");
        assert!(settings.broker_uri.contains("s3cret"), "the URI itself carries it");
        assert!(!format!("{settings:?}").contains("s3cret"));
        assert_eq!(
            settings.subscription.routing_keys,
            ["versioned_notifications.info", "versioned_notifications.error"]
        );
        assert_eq!(settings.subscription.exchange, "nova");
    }
}
