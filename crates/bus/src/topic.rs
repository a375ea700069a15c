//! Small messages on a topic exchange between parties the broker authenticates: one
//! connection with a confirm-mode publishing channel, publications carrying a `user_id` the
//! broker validates against the connection's user (RabbitMQ refuses a forged one), and
//! consumers yielding [`TopicMessage`]s. The agent's request/response and heartbeat protocol
//! is built on this (`aos-agent`'s `transport`).
//!
//! Deliveries are consumed with automatic acknowledgement: such protocols replace a lost
//! message by the next one or by a retry, and a per-message TTL keeps a backlog from
//! delivering stale ones.

use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer, ExchangeKind};

use crate::BusError;

/// A connection with a publishing channel, authenticated as `user`.
pub struct TopicBus {
    connection: Connection,
    publisher: Channel,
    user: String,
}

/// One delivery: what a consumer needs to validate and decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMessage {
    pub routing_key: String,
    /// The broker-validated sender, when the publisher set one.
    pub user_id: Option<String>,
    pub body: Vec<u8>,
}

/// Why a publication failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicPublishError {
    #[error("RabbitMQ refused the message")]
    Refused,
    #[error("RabbitMQ operation failed: {0}")]
    Bus(#[from] lapin::Error),
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl TopicBus {
    /// Connects to `amqp_uri` as `user` (the URI's user: it is what the broker validates the
    /// `user_id` property against). One attempt, bounded by [`crate::CONNECT_TIMEOUT`].
    pub async fn connect(amqp_uri: &str, user: &str, connection_name: &str) -> Result<Self, BusError> {
        let connection = crate::connect(amqp_uri, connection_name).await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { connection, publisher, user: user.to_owned() })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    /// Declares `exchange` as a durable topic exchange.
    pub async fn declare_exchange(&self, exchange: &str) -> Result<(), BusError> {
        let channel = self.connection.create_channel().await?;
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        let declared =
            channel.exchange_declare(exchange.into(), ExchangeKind::Topic, options, FieldTable::default()).await;
        crate::close_channel(&channel).await;
        Ok(declared?)
    }

    /// Fails unless `exchange` exists (for users that may not declare it).
    pub async fn check_exchange(&self, exchange: &str) -> Result<(), BusError> {
        let channel = self.connection.create_channel().await?;
        let options = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
        let checked =
            channel.exchange_declare(exchange.into(), ExchangeKind::Topic, options, FieldTable::default()).await;
        crate::close_channel(&channel).await;
        Ok(checked?)
    }

    /// Declares the named, non-exclusive `queue` and binds it to `exchange` under each key.
    pub async fn declare_bound_queue(&self, queue: &str, exchange: &str, keys: &[&str]) -> Result<(), BusError> {
        let channel = self.connection.create_channel().await?;
        let declared =
            match channel.queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default()).await {
                Ok(_) => bind_keys(&channel, queue, exchange, keys).await,
                Err(error) => Err(error),
            };
        crate::close_channel(&channel).await;
        Ok(declared?)
    }

    /// A server-named, exclusive queue bound to `exchange` under each key, consumed on a
    /// channel of its own (gone with the connection).
    pub async fn exclusive_consumer(&self, exchange: &str, keys: &[&str], tag: &str) -> Result<TopicStream, BusError> {
        let channel = self.connection.create_channel().await?;
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await?;
        let name = queue.name().as_str().to_owned();
        bind_keys(&channel, &name, exchange, keys).await?;
        consume_on(channel, &name, tag).await
    }

    /// Consumes `queue` on a channel of its own.
    pub async fn consume(&self, queue: &str, tag: &str) -> Result<TopicStream, BusError> {
        let channel = self.connection.create_channel().await?;
        consume_on(channel, queue, tag).await
    }

    /// Publishes `body` (JSON) to `exchange` under `routing_key`, non-persistent, with
    /// `user_id` when given, and waits for the broker's confirm. `ttl` bounds how long it may
    /// wait in a queue.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        user_id: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(), TopicPublishError> {
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
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
            .await?;
        match confirm.await? {
            Confirmation::Nack(_) => Err(TopicPublishError::Refused),
            _ => Ok(()),
        }
    }

    pub async fn close(&self) {
        crate::close(&self.connection).await;
    }
}

async fn bind_keys(channel: &Channel, queue: &str, exchange: &str, keys: &[&str]) -> Result<(), lapin::Error> {
    for key in keys {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

async fn consume_on(channel: Channel, queue: &str, tag: &str) -> Result<TopicStream, BusError> {
    let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let consumer = channel.basic_consume(queue.into(), tag.into(), options, FieldTable::default()).await?;
    Ok(TopicStream { _channel: channel, consumer })
}

/// The deliveries of one consumer.
pub struct TopicStream {
    _channel: Channel,
    consumer: Consumer,
}

impl TopicStream {
    /// The next delivery; `None` once the consumer or its channel ended (reconnect).
    pub async fn next(&mut self) -> Option<TopicMessage> {
        match self.consumer.next().await {
            Some(Ok(delivery)) => Some(TopicMessage {
                routing_key: delivery.routing_key.as_str().to_owned(),
                user_id: delivery.properties.user_id().as_ref().map(|user| user.as_str().to_owned()),
                body: delivery.data,
            }),
            Some(Err(error)) => {
                tracing::warn!(%error, "topic consumer failed");
                None
            }
            None => None,
        }
    }
}
