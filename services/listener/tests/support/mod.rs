//! What the listener's integration tests share: a topic exchange and queue of their own on the
//! test broker (vhost `/`, never Nova's), a publisher that plays Nova, the config that points
//! a listener at them, and a listener run in-process on a test database.

#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aos_bus::{ConfirmedPublisher, TopicSubscription};
use aos_daemon::{CheckState, DaemonContext};
use aos_listener::Counters;
use aos_testkit::testing::TestDatabase;
use aos_testkit::{Scratch, TEST_AMQP_URI, test_config, wait_until};
use tokio_util::sync::CancellationToken;

/// The routing key of Nova's versioned INFO notifications (topic `versioned_notifications`).
pub const INFO: &str = "versioned_notifications.info";

/// An exchange and queue that exist for one test.
pub struct TestBroker {
    pub connection: aos_bus::Connection,
    pub subscription: TopicSubscription,
    publisher: ConfirmedPublisher,
}

impl TestBroker {
    /// Declares `aos-test-<hex>` exchange and queue as the listener will (durable, the
    /// default of `[listener] durability`), so that what is published before the listener
    /// starts is kept.
    pub async fn new() -> anyhow::Result<Self> {
        let name = format!("aos-test-listener-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let subscription = TopicSubscription {
            exchange: format!("{name}-nova"),
            queue: format!("{name}-notifications"),
            routing_keys: vec![INFO.to_owned(), "versioned_notifications.error".to_owned()],
            durable: true,
        };
        let connection = aos_bus::connect(TEST_AMQP_URI, "aos-listener test").await?;
        aos_bus::declare_topic_subscription(&connection, &subscription).await?;
        let publisher = ConfirmedPublisher::open(&connection, &subscription.exchange, 500).await?;
        Ok(Self { connection, subscription, publisher })
    }

    /// The `[listener]` section that points a listener at this exchange and queue.
    pub fn listener_section(&self) -> String {
        format!(
            "[listener]\nnova_transport_url = rabbit://guest:guest@127.0.0.1:5672/\nnotification_exchange = {}\nqueue_name = {}\n",
            self.subscription.exchange, self.subscription.queue
        )
    }

    /// Publishes `bodies` with `routing_key` and waits for the broker's confirms.
    pub async fn publish<'a>(
        &self,
        routing_key: &str,
        bodies: impl IntoIterator<Item = &'a [u8]>,
    ) -> anyhow::Result<()> {
        self.publisher.publish_all(routing_key, bodies).await?;
        Ok(())
    }

    /// Publishes `(routing key, body)` pairs and waits for the broker's confirms.
    pub async fn publish_routed<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> anyhow::Result<()> {
        self.publisher.publish_routed(messages).await?;
        Ok(())
    }

    /// Messages waiting in the queue (not counting delivered, unacknowledged ones).
    pub async fn depth(&self) -> anyhow::Result<u32> {
        Ok(aos_bus::queue_depth(&self.connection, &self.subscription.queue).await?)
    }

    /// Deletes the queue and the exchange.
    pub async fn cleanup(self) {
        if let Err(error) = aos_bus::delete_topic_subscription(&self.connection, &self.subscription).await {
            eprintln!("cannot delete the test exchange and queue: {error}");
        }
        self.publisher.close().await;
        aos_bus::close(&self.connection).await;
    }
}

/// Writes the test config (database, fast shutdown) plus the listener section of `broker`;
/// returns both files (the second overrides the first).
pub fn write_configs(scratch: &Scratch, database: &TestDatabase, broker: &TestBroker) -> anyhow::Result<Vec<PathBuf>> {
    let base = scratch.write_config(&test_config(database, "")?)?;
    let listener = scratch.path().join("listener.conf");
    std::fs::write(&listener, broker.listener_section())?;
    Ok(vec![base, listener])
}

/// A listener running in this process (`aos_listener::consume`, the daemon's own loop) on
/// the configuration a daemon would load.
pub struct InProcessListener {
    pub counters: Arc<Counters>,
    pub context: DaemonContext,
    task: tokio::task::JoinHandle<()>,
    _scratch: Scratch,
}

impl InProcessListener {
    /// Starts it and waits until it consumes (readiness `nova_broker` ok).
    pub async fn start(database: &TestDatabase, broker: &TestBroker) -> anyhow::Result<Self> {
        let scratch = Scratch::new()?;
        let files = write_configs(&scratch, database, broker)?;
        let loaded = aos_config::load(&aos_config::LoadOptions {
            config_files: files,
            config_dirs: Vec::new(),
            default_files: false,
        })
        .map_err(|error| anyhow::anyhow!("{error}"))?;
        let shutdown = CancellationToken::new();
        let context = DaemonContext::connect(aos_listener::ROLE, Arc::new(loaded.config), shutdown).await?;
        let counters = Arc::new(Counters::default());
        let settings = aos_listener::ListenerSettings::from_config(&context.config, &context.identity);
        let task = tokio::spawn(aos_listener::consume(
            context.db.clone(),
            settings,
            context.readiness.clone(),
            counters.clone(),
            context.shutdown.clone(),
        ));
        let listener = Self { counters, context, task, _scratch: scratch };
        let readiness = listener.context.readiness.clone();
        wait_until(Duration::from_secs(30), "the listener to consume", || {
            let readiness = readiness.clone();
            async move { Ok((readiness.snapshot().get(aos_listener::BROKER_CHECK) == Some(&CheckState::Ok)).then_some(())) }
        })
        .await?;
        Ok(listener)
    }

    pub fn db(&self) -> &aos_db::DatabaseConnection {
        &self.context.db
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Cancels it as SIGTERM would and waits for it to finish its batch and return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.context.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await??;
        self.context.db.close().await?;
        Ok(())
    }
}

/// Waits until `notifications` holds at least `expected` rows in total.
pub async fn wait_for_rows(db: &aos_db::DatabaseConnection, expected: u64) -> anyhow::Result<()> {
    let outcome = wait_until(Duration::from_secs(120), &format!("{expected} recorded notifications"), || {
        let db = db.clone();
        async move { Ok((total_rows(&db).await? >= expected).then_some(())) }
    })
    .await;
    if let Err(error) = outcome {
        anyhow::bail!("{error} (there are {})", total_rows(db).await.unwrap_or_default());
    }
    Ok(())
}

/// Rows recorded in total.
pub async fn total_rows(db: &aos_db::DatabaseConnection) -> anyhow::Result<u64> {
    Ok(aos_db::count_notifications(db).await?.values().sum())
}
