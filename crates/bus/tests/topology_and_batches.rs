//! Topology and batch consuming against the real broker (vhost `/`, names of our own).

use std::time::Duration;

use aos_bus::lapin::options::ExchangeDeclareOptions;
use aos_bus::lapin::types::FieldTable;
use aos_bus::{BatchConsumer, BatchLimits, ConfirmedPublisher, NextBatch, TopicSubscription};
use tokio_util::sync::CancellationToken;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2F";

fn subscription(durable: bool) -> TopicSubscription {
    let name = format!("aos-test-bus-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    TopicSubscription {
        exchange: format!("{name}-exchange"),
        queue: format!("{name}-queue"),
        routing_keys: vec!["topic.info".to_owned(), "topic.error".to_owned()],
        durable,
    }
}

async fn wait_for_depth(connection: &aos_bus::Connection, queue: &str, expected: u32) -> anyhow::Result<()> {
    for _ in 0..300 {
        if aos_bus::queue_depth(connection, queue).await? == expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("queue {queue} never reached depth {expected}")
}

async fn declare_exchange(
    connection: &aos_bus::Connection,
    name: &str,
    durable: bool,
) -> Result<(), aos_bus::lapin::Error> {
    let channel = connection.create_channel().await?;
    let options = ExchangeDeclareOptions { durable, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), aos_bus::lapin::ExchangeKind::Topic, options, FieldTable::default()).await?;
    let _ = channel.close(200, "OK".into()).await;
    Ok(())
}

#[tokio::test]
async fn the_publishers_exchange_is_used_as_it_is_and_our_queue_keeps_its_durability() -> anyhow::Result<()> {
    let connection = aos_bus::connect(BROKER, "aos-bus test").await?;
    // Our queue durable; the publisher (a Nova with amqp_durable_queues = true) was first
    // and made its exchange durable.
    let subscription = subscription(true);
    declare_exchange(&connection, &subscription.exchange, true).await?;
    let report = aos_bus::declare_topic_subscription(&connection, &subscription).await?;
    assert_eq!(report, aos_bus::DeclareReport::default(), "used as it is, nothing to warn about");

    // The queue is bound.
    let publisher = ConfirmedPublisher::open(&connection, &subscription.exchange, 10).await?;
    publisher.publish_all("topic.error", [&b"one"[..]]).await?;
    publisher.publish_all("topic.debug", [&b"not bound"[..]]).await?;
    wait_for_depth(&connection, &subscription.queue, 1).await?;

    // Declaring again with the queue's durability changed keeps the queue as it is.
    let changed = TopicSubscription { durable: false, ..subscription.clone() };
    let report = aos_bus::declare_topic_subscription(&connection, &changed).await?;
    assert!(report.queue_mismatch.is_some(), "{report:?}");
    assert!(!report.exchange_created);
    assert_eq!(aos_bus::queue_depth(&connection, &subscription.queue).await?, 1);

    publisher.close().await;
    aos_bus::delete_topic_subscription(&connection, &subscription).await?;
    aos_bus::close(&connection).await;
    Ok(())
}

#[tokio::test]
async fn an_absent_exchange_is_created_non_durable_so_that_any_publisher_accepts_it() -> anyhow::Result<()> {
    let connection = aos_bus::connect(BROKER, "aos-bus test").await?;
    let subscription = subscription(true);
    let report = aos_bus::declare_topic_subscription(&connection, &subscription).await?;
    assert!(report.exchange_created, "{report:?}");
    assert_eq!(report.queue_mismatch, None);
    // oslo.messaging with amqp_durable_queues = false declares it non-durable: accepted.
    declare_exchange(&connection, &subscription.exchange, false).await?;
    // With amqp_durable_queues = true the broker refuses, and oslo.messaging falls back to a
    // non-durable declaration (impl_rabbit `_publish`), which is accepted.
    let durable = declare_exchange(&connection, &subscription.exchange, true).await;
    assert!(durable.is_err(), "the exchange we created is not durable");
    // Declared again (a reconnect): the exchange is now found, not created.
    let report = aos_bus::declare_topic_subscription(&connection, &subscription).await?;
    assert!(!report.exchange_created, "{report:?}");
    aos_bus::delete_topic_subscription(&connection, &subscription).await?;
    aos_bus::close(&connection).await;
    Ok(())
}

#[tokio::test]
async fn a_batch_is_acknowledged_at_once_or_handed_back_whole() -> anyhow::Result<()> {
    let connection = aos_bus::connect(BROKER, "aos-bus test").await?;
    let subscription = subscription(false);
    aos_bus::declare_topic_subscription(&connection, &subscription).await?;
    let publisher = ConfirmedPublisher::open(&connection, &subscription.exchange, 100).await?;
    let bodies: Vec<Vec<u8>> = (0..30).map(|index| format!("message {index}").into_bytes()).collect();
    publisher.publish_all("topic.info", bodies.iter().map(Vec::as_slice)).await?;

    let limits = BatchLimits { max_messages: 20, prefetch: 100, ..BatchLimits::default() };
    let shutdown = CancellationToken::new();
    let mut consumer = BatchConsumer::start(&connection, &subscription.queue, "aos-bus test", limits).await?;
    let NextBatch::Batch { batch: first, stop_after: false } = consumer.next_batch(&shutdown).await else {
        anyhow::bail!("no first batch");
    };
    assert_eq!(first.bodies.len(), 20, "a full batch stops at max_messages");
    assert_eq!(first.bodies[0], b"message 0");
    let NextBatch::Batch { batch: second, .. } = consumer.next_batch(&shutdown).await else {
        anyhow::bail!("no second batch");
    };
    assert_eq!(second.bodies.len(), 10, "the rest, once the window passed");
    first.ack.ack().await?;
    second.ack.requeue().await?;

    let NextBatch::Batch { batch: again, .. } = consumer.next_batch(&shutdown).await else {
        anyhow::bail!("the requeued batch did not come back");
    };
    assert_eq!(again.bodies.len(), 10);
    assert_eq!(again.redelivered, 10);
    assert_eq!(again.bodies[0], b"message 20");
    again.ack.ack().await?;

    shutdown.cancel();
    assert!(matches!(consumer.next_batch(&shutdown).await, NextBatch::Stopped));
    consumer.cancel().await?;
    consumer.close().await;
    assert_eq!(aos_bus::queue_depth(&connection, &subscription.queue).await?, 0, "all acknowledged");

    publisher.close().await;
    aos_bus::delete_topic_subscription(&connection, &subscription).await?;
    aos_bus::close(&connection).await;
    Ok(())
}
