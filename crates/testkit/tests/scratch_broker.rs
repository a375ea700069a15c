//! The scratch broker is a real RabbitMQ node of the test's own: it accepts AMQP on its port,
//! closes it when stopped, and keeps a durable queue's persistent messages across a graceful
//! stop and a kill.

use aos_bus::{ConfirmedPublisher, TopicSubscription};
use aos_testkit::ScratchBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_queue_keeps_its_persistent_messages_across_a_stop_and_a_kill() -> anyhow::Result<()> {
    let mut broker = ScratchBroker::start().await?;
    assert_ne!(broker.port(), 5672, "never the shared broker");
    let subscription = TopicSubscription {
        exchange: "scratch-test".into(),
        queue: "scratch-test-queue".into(),
        routing_keys: vec!["key".into()],
        durable: true,
    };
    let connection = aos_bus::connect(&broker.amqp_uri(), "scratch broker test").await?;
    // A durable exchange (as a Nova with amqp_durable_queues = true has): its binding to the
    // durable queue survives the restarts too.
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            "scratch-test".into(),
            aos_bus::lapin::ExchangeKind::Topic,
            aos_bus::lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
            aos_bus::lapin::types::FieldTable::default(),
        )
        .await?;
    aos_bus::declare_topic_subscription(&connection, &subscription).await?;
    let publisher = ConfirmedPublisher::open(&connection, "scratch-test", 10).await?;
    publisher.publish_all("key", [&b"one"[..], &b"two"[..]]).await?;
    aos_bus::close(&connection).await;

    broker.stop().await?;
    assert!(!broker.is_running());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", broker.port())).await.is_err(), "the port is closed");
    assert!(aos_bus::connect(&broker.amqp_uri(), "scratch broker test").await.is_err());

    broker.start_again().await?;
    let connection = aos_bus::connect(&broker.amqp_uri(), "scratch broker test").await?;
    assert_eq!(aos_bus::queue_depth(&connection, &subscription.queue).await?, 2, "kept across a graceful stop");
    let publisher = ConfirmedPublisher::open(&connection, "scratch-test", 10).await?;
    publisher.publish_all("key", [&b"three"[..]]).await?;
    aos_bus::close(&connection).await;

    broker.kill().await?;
    assert!(!broker.is_running());
    broker.start_again().await?;
    let connection = aos_bus::connect(&broker.amqp_uri(), "scratch broker test").await?;
    assert_eq!(aos_bus::queue_depth(&connection, &subscription.queue).await?, 3, "confirmed messages survive a kill");
    aos_bus::close(&connection).await;
    Ok(())
}
