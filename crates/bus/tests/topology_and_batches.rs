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

#[tokio::test]
async fn an_exchange_declared_by_its_publisher_with_other_flags_is_used_as_it_is() -> anyhow::Result<()> {
    let connection = aos_bus::connect(BROKER, "aos-bus test").await?;
    let subscription = subscription(true);
    // The publisher (Nova, amqp_durable_queues = false) was first.
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            subscription.exchange.as_str().into(),
            aos_bus::lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: false, ..ExchangeDeclareOptions::default() },
            FieldTable::default(),
        )
        .await?;
    let report = aos_bus::declare_topic_subscription(&connection, &subscription).await?;
    assert!(report.exchange_mismatch.is_some(), "{report:?}");
    assert_eq!(report.queue_mismatch, None);

    // The queue is bound all the same.
    let publisher = ConfirmedPublisher::open(&connection, &subscription.exchange, 10).await?;
    publisher.publish_all("topic.error", [&b"one"[..]]).await?;
    publisher.publish_all("topic.debug", [&b"not bound"[..]]).await?;
    wait_for_depth(&connection, &subscription.queue, 1).await?;

    // Declaring again with the queue's durability changed keeps the queue as it is.
    let changed = TopicSubscription { durable: false, ..subscription.clone() };
    let report = aos_bus::declare_topic_subscription(&connection, &changed).await?;
    assert!(report.queue_mismatch.is_some(), "{report:?}");
    assert_eq!(report.exchange_mismatch, None, "the exchange is not durable, as `changed` asks");
    assert_eq!(aos_bus::queue_depth(&connection, &subscription.queue).await?, 1);

    publisher.close().await;
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
