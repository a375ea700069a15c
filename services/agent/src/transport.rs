//! The agents' AMQP plumbing on top of `aos-bus`: one connection, a confirm-mode channel for
//! publishing envelopes with the validated `user_id` property, and consumers that turn
//! deliveries into [`Incoming`] messages for [`crate::protocol`] to validate.
//!
//! Deliveries are consumed with automatic acknowledgement: a lost heartbeat is replaced by
//! the next one, and a lost request or answer is what the requester's timeouts and retries
//! are for (every request is idempotent). Requests and heartbeats carry a per-message TTL so a
//! backlog never makes a dead node look alive or answers a requester that gave up long ago.

use std::time::Duration;

use aos_bus::lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use aos_bus::lapin::types::FieldTable;
use aos_bus::lapin::{self, BasicProperties, Channel, Confirmation, Connection, Consumer, ExchangeKind};
use futures::StreamExt as _;

use crate::protocol::{EXCHANGE, Envelope, HEARTBEAT_QUEUE, Incoming, Kind, node_queue, request_key};

/// A connection with a publishing channel, authenticated as `user`.
pub struct AgentBus {
    connection: Connection,
    publisher: Channel,
    user: String,
}

impl AgentBus {
    /// Connects to `amqp_uri` as `user` (the URI's user: it is what the broker validates the
    /// `user_id` property against). One attempt, bounded by `aos_bus::CONNECT_TIMEOUT`.
    pub async fn connect(amqp_uri: &str, user: &str, connection_name: &str) -> Result<Self, aos_bus::BusError> {
        let connection = aos_bus::connect(amqp_uri, connection_name).await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { connection, publisher, user: user.to_owned() })
    }

    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    /// Controller side: declares the exchange (durable topic) and the heartbeat queue.
    pub async fn declare_controller_topology(&self) -> Result<(), lapin::Error> {
        let channel = self.connection.create_channel().await?;
        channel
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        channel.queue_declare(HEARTBEAT_QUEUE.into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
        channel
            .queue_bind(
                HEARTBEAT_QUEUE.into(),
                EXCHANGE.into(),
                "node.heartbeat.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(())
    }

    /// Node side: checks that the exchange exists (a node user may not create or delete it)
    /// and declares and binds the node's own request queue.
    pub async fn declare_node_topology(&self, node: &str) -> Result<(), lapin::Error> {
        let channel = self.connection.create_channel().await?;
        channel
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        let queue = node_queue(node);
        channel.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                EXCHANGE.into(),
                request_key(node).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(())
    }

    /// Requester side: a server-named exclusive queue bound to every node's confirms and
    /// responses (the requester keeps those whose correlation it is waiting for).
    pub async fn reply_consumer(&self, tag: &str) -> Result<IncomingStream, lapin::Error> {
        let channel = self.connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        for key in [format!("node.{}.#", Kind::Confirm.as_str()), format!("node.{}.#", Kind::Response.as_str())] {
            channel
                .queue_bind(
                    queue.name().clone(),
                    EXCHANGE.into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let name = queue.name().as_str().to_owned();
        Self::consume_on(channel, &name, tag).await
    }

    /// Consumes `queue` on a channel of its own.
    pub async fn consume(&self, queue: &str, tag: &str) -> Result<IncomingStream, lapin::Error> {
        let channel = self.connection.create_channel().await?;
        Self::consume_on(channel, queue, tag).await
    }

    async fn consume_on(channel: Channel, queue: &str, tag: &str) -> Result<IncomingStream, lapin::Error> {
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
                FieldTable::default(),
            )
            .await?;
        Ok(IncomingStream { _channel: channel, consumer })
    }

    /// Publishes `envelope` under its routing key with `user_id` = this connection's user, and
    /// waits for the broker's confirm. `ttl` bounds how long it may wait in a queue.
    pub async fn publish(&self, envelope: &Envelope, ttl: Option<Duration>) -> Result<(), PublishFailure> {
        self.publish_raw(&envelope.routing_key(), &serde_json::to_vec(envelope)?, Some(&self.user), ttl).await
    }

    /// Publishes any bytes under any key (tests of malformed and forged messages use this).
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        user_id: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(), PublishFailure> {
        let mut properties =
            BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(1);
        if let Some(user_id) = user_id {
            properties = properties.with_user_id(user_id.into());
        }
        if let Some(ttl) = ttl {
            properties = properties.with_expiration(ttl.as_millis().max(1).to_string().as_str().into());
        }
        let confirm = self
            .publisher
            .basic_publish(EXCHANGE.into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
            .await?;
        match confirm.await? {
            Confirmation::Nack(_) => Err(PublishFailure::Refused),
            _ => Ok(()),
        }
    }

    pub async fn close(&self) {
        aos_bus::close(&self.connection).await;
    }
}

/// Why a publication failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    #[error("RabbitMQ refused the message")]
    Refused,
    #[error("RabbitMQ operation failed: {0}")]
    Bus(#[from] lapin::Error),
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Deliveries of one consumer as [`Incoming`] messages.
pub struct IncomingStream {
    _channel: Channel,
    consumer: Consumer,
}

impl IncomingStream {
    /// The next delivery; `None` once the consumer or its channel ended (reconnect).
    pub async fn next(&mut self) -> Option<Incoming> {
        match self.consumer.next().await {
            Some(Ok(delivery)) => Some(Incoming {
                routing_key: delivery.routing_key.as_str().to_owned(),
                user_id: delivery.properties.user_id().as_ref().map(|user| user.as_str().to_owned()),
                body: delivery.data,
            }),
            Some(Err(error)) => {
                tracing::warn!(%error, "agent consumer failed");
                None
            }
            None => None,
        }
    }
}
