//! Exchanges, queues and bindings, declared in one place.
//!
//! [`TopicSubscription`] is the shape of every "read someone else's topic exchange" consumer in
//! the suite (today: the listener on Nova's notification exchange): a topic exchange that the
//! publisher owns, our own named queue, and bindings for the routing keys we want
//! (docs/adr/0007-listener.md, "Topology").
//!
//! **The exchange is the publisher's**: we never impose flags on it. We check that it exists
//! (passive declaration) and use it as it is. Only when it does not exist yet do we create it,
//! so that our queue is bound before the publisher's first message, and then always
//! `durable = false, auto_delete = false`: oslo.messaging declares it with `durable =
//! amqp_durable_queues`, and when that is refused (`406 PRECONDITION_FAILED`, "inequivalent
//! arg 'durable'") it falls back to a non-durable declaration and carries on — so a
//! non-durable exchange is the one thing we may create that no Nova configuration rejects,
//! whereas a durable one would make a Nova with the default `amqp_durable_queues = false`
//! fail every notification.
//!
//! **The queue is ours**: declared with [`TopicSubscription::durable`]. A durable queue keeps
//! the (persistent) messages it holds across a broker restart. A queue that exists with the
//! other durability is used as it is, with a warning: it must be deleted by an operator to
//! change it.

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
    /// Durability of our queue (`[listener] durability`). Never applied to the publisher's
    /// exchange (see the module documentation).
    pub durable: bool,
}

/// What [`declare_topic_subscription`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclareReport {
    /// The exchange did not exist and we created it (non-durable); otherwise it was the
    /// publisher's, used as it is.
    pub exchange_created: bool,
    /// The queue exists with other flags (our `durable` changed since it was created): a fact
    /// an operator should see.
    pub queue_mismatch: Option<String>,
}

impl DeclareReport {
    /// One line per mismatch, for a warning.
    pub fn warnings(&self) -> Vec<String> {
        self.queue_mismatch.iter().cloned().collect()
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

    let exchange = subscription.exchange.as_str();
    if let Err(error) = declare_exchange(&channel, exchange, true).await {
        if !is_soft_error(&error, AMQPSoftError::NOTFOUND) {
            return Err(error.into());
        }
        // Not there yet (the publisher has not started, or the broker restarted and the
        // exchange was not durable): create it the one way every publisher accepts.
        channel = connection.create_channel().await?;
        match declare_exchange(&channel, exchange, false).await {
            Ok(()) => report.exchange_created = true,
            // The publisher declared it, with other flags, in between: use it as it is.
            Err(error) if is_soft_error(&error, AMQPSoftError::PRECONDITIONFAILED) => {
                channel = connection.create_channel().await?;
                declare_exchange(&channel, exchange, true).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }

    let queue_options = QueueDeclareOptions { durable: subscription.durable, ..QueueDeclareOptions::default() };
    let declared =
        channel.queue_declare(subscription.queue.as_str().into(), queue_options, FieldTable::default()).await;
    if let Err(error) = declared {
        if !is_soft_error(&error, AMQPSoftError::PRECONDITIONFAILED) {
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

/// Declares `name` as a topic exchange: only checks that it exists when `passive`, otherwise
/// creates it non-durable and not auto-deleted (see the module documentation).
async fn declare_exchange(channel: &Channel, name: &str, passive: bool) -> Result<(), lapin::Error> {
    let options =
        ExchangeDeclareOptions { passive, durable: false, auto_delete: false, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), ExchangeKind::Topic, options, FieldTable::default()).await
}

/// True when the broker refused an operation with this soft error (which closes the channel):
/// `NOTFOUND` for a passive declaration of something absent, `PRECONDITIONFAILED` for a
/// declaration whose flags differ from the existing entity's.
fn is_soft_error(error: &lapin::Error, expected: AMQPSoftError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(soft) if *soft == expected)
    )
}

async fn close_quietly(channel: &Channel) {
    crate::close_channel(channel).await;
}
