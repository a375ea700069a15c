//! Exchanges, queues and bindings, declared in one place.
//!
//! [`TopicSubscription`] is the shape of every "read someone else's topic exchange" consumer in
//! the suite (today: the listener on Nova's notification exchange): a topic exchange that the
//! publisher also declares, our own named queue, and bindings for the routing keys we want.
//!
//! The exchange belongs to the publisher (Nova): oslo.messaging declares it on first use as a
//! topic exchange, `auto_delete = false`, `durable = [oslo_messaging_rabbit]
//! amqp_durable_queues` (default false). We declare it too, with the same settings, so that
//! our queue can be bound before Nova's first notification (nothing sent in between is
//! lost). A declaration whose flags differ from the existing exchange's is refused by the
//! broker (`406 PRECONDITION_FAILED`) and closes the channel; we then use the exchange as it
//! is (passive declaration) and report the mismatch, rather than refuse to start: the
//! publisher's settings win, and redeclaring with other flags would not change them anyway.
//! The same holds for our queue when `durable` changed since it was created (the queue must
//! be deleted by an operator to change it; until then it keeps working as it is).

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

use crate::BusError;

/// A queue of ours bound to a topic exchange that another service publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSubscription {
    /// The publisher's topic exchange, e.g. `nova`.
    pub exchange: String,
    /// Our queue, shared by every instance of the consuming daemon (competing consumers).
    pub queue: String,
    /// Binding keys, e.g. `versioned_notifications.info`.
    pub routing_keys: Vec<String>,
    /// Durability of the queue, and of the exchange when we are the first to declare it.
    pub durable: bool,
}

/// What [`declare_topic_subscription`] found: each mismatch is a fact an operator should see
/// (the entities exist with other flags and were used as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclareReport {
    /// The exchange exists with other flags (e.g. Nova's `amqp_durable_queues` differs from
    /// our `durable`).
    pub exchange_mismatch: Option<String>,
    /// The queue exists with other flags (our `durable` changed since it was created).
    pub queue_mismatch: Option<String>,
}

impl DeclareReport {
    /// One line per mismatch, for a warning.
    pub fn warnings(&self) -> Vec<String> {
        self.exchange_mismatch.iter().chain(self.queue_mismatch.iter()).cloned().collect()
    }
}

/// Declares the exchange and the queue of `subscription` and binds every routing key, on a
/// short-lived channel of `connection` (a refused declaration closes its channel).
pub async fn declare_topic_subscription(
    connection: &Connection,
    subscription: &TopicSubscription,
) -> Result<DeclareReport, BusError> {
    let mut report = DeclareReport::default();
    let mut channel = connection.create_channel().await?;

    let exchange_options = ExchangeDeclareOptions {
        durable: subscription.durable,
        auto_delete: false,
        ..ExchangeDeclareOptions::default()
    };
    let declared = channel
        .exchange_declare(
            subscription.exchange.as_str().into(),
            ExchangeKind::Topic,
            exchange_options,
            FieldTable::default(),
        )
        .await;
    if let Err(error) = declared {
        if !is_precondition_failed(&error) {
            return Err(error.into());
        }
        channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                subscription.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        report.exchange_mismatch = Some(format!(
            "exchange {} exists with other flags than durable={} auto_delete=false (its publisher's settings); \
             using it as it is: set durability to match the publisher's amqp_durable_queues",
            subscription.exchange, subscription.durable
        ));
    }

    let queue_options = QueueDeclareOptions { durable: subscription.durable, ..QueueDeclareOptions::default() };
    let declared =
        channel.queue_declare(subscription.queue.as_str().into(), queue_options, FieldTable::default()).await;
    if let Err(error) = declared {
        if !is_precondition_failed(&error) {
            return Err(error.into());
        }
        channel = connection.create_channel().await?;
        channel
            .queue_declare(
                subscription.queue.as_str().into(),
                QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        report.queue_mismatch = Some(format!(
            "queue {} exists with other flags than durable={}; using it as it is \
             (delete the queue to have it declared again with the configured durability)",
            subscription.queue, subscription.durable
        ));
    }

    for routing_key in &subscription.routing_keys {
        channel
            .queue_bind(
                subscription.queue.as_str().into(),
                subscription.exchange.as_str().into(),
                routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    close_quietly(&channel).await;
    Ok(report)
}

/// Deletes the queue and the exchange of `subscription` (tests and benchmarks clean up with
/// this; a daemon never deletes the publisher's exchange).
pub async fn delete_topic_subscription(
    connection: &Connection,
    subscription: &TopicSubscription,
) -> Result<(), BusError> {
    let channel = connection.create_channel().await?;
    channel.queue_delete(subscription.queue.as_str().into(), QueueDeleteOptions::default()).await?;
    channel.exchange_delete(subscription.exchange.as_str().into(), ExchangeDeleteOptions::default()).await?;
    close_quietly(&channel).await;
    Ok(())
}

/// Messages ready in `queue` (not counting those delivered and not yet acknowledged).
pub async fn queue_depth(connection: &Connection, queue: &str) -> Result<u32, BusError> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel.queue_declare(queue.into(), passive, FieldTable::default()).await?;
    close_quietly(&channel).await;
    Ok(declared.message_count())
}

/// True when the broker refused a declaration because the entity exists with other flags.
fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

async fn close_quietly(channel: &Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}
