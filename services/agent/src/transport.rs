//! The agents' messaging on `aos-bus`'s [`aos_bus::TopicBus`]: the exchange and queues of the
//! protocol ([`crate::protocol`]) and envelopes published with the connection's user as the
//! broker-validated `user_id`.
//!
//! Deliveries are consumed with automatic acknowledgement: a lost heartbeat is replaced by
//! the next one, and a lost request or answer is what the requester's timeouts and retries
//! are for (every request is idempotent). Requests and heartbeats carry a per-message TTL so a
//! backlog never makes a dead node look alive or answers a requester that gave up long ago.

use std::time::Duration;

use aos_bus::{BusError, TopicBus};

use crate::protocol::{EXCHANGE, Envelope, HEARTBEAT_QUEUE, Kind, node_queue, request_key};

/// Why a publication failed.
pub use aos_bus::TopicPublishError as PublishFailure;
/// Deliveries of one consumer, as [`crate::protocol::Incoming`] messages.
pub use aos_bus::TopicStream as IncomingStream;

/// A connection with a publishing channel, authenticated as `user`.
pub struct AgentBus {
    bus: TopicBus,
}

impl AgentBus {
    /// Connects to `amqp_uri` as `user` (the URI's user: it is what the broker validates the
    /// `user_id` property against). One attempt, bounded by `aos_bus::CONNECT_TIMEOUT`.
    pub async fn connect(amqp_uri: &str, user: &str, connection_name: &str) -> Result<Self, BusError> {
        Ok(Self { bus: TopicBus::connect(amqp_uri, user, connection_name).await? })
    }

    pub fn is_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// Controller side: declares the exchange (durable topic) and the heartbeat queue.
    pub async fn declare_controller_topology(&self) -> Result<(), BusError> {
        self.bus.declare_exchange(EXCHANGE).await?;
        self.bus.declare_bound_queue(HEARTBEAT_QUEUE, EXCHANGE, &["node.heartbeat.#"]).await
    }

    /// Node side: checks that the exchange exists (a node user may not create or delete it)
    /// and declares and binds the node's own request queue.
    pub async fn declare_node_topology(&self, node: &str) -> Result<(), BusError> {
        self.bus.check_exchange(EXCHANGE).await?;
        self.bus.declare_bound_queue(&node_queue(node), EXCHANGE, &[request_key(node).as_str()]).await
    }

    /// Requester side: a server-named exclusive queue bound to every node's confirms and
    /// responses (the requester keeps those whose correlation it is waiting for).
    pub async fn reply_consumer(&self, tag: &str) -> Result<IncomingStream, BusError> {
        let confirms = format!("node.{}.#", Kind::Confirm.as_str());
        let responses = format!("node.{}.#", Kind::Response.as_str());
        self.bus.exclusive_consumer(EXCHANGE, &[confirms.as_str(), responses.as_str()], tag).await
    }

    /// Consumes `queue` on a channel of its own.
    pub async fn consume(&self, queue: &str, tag: &str) -> Result<IncomingStream, BusError> {
        self.bus.consume(queue, tag).await
    }

    /// Publishes `envelope` under its routing key with `user_id` = this connection's user, and
    /// waits for the broker's confirm. `ttl` bounds how long it may wait in a queue.
    pub async fn publish(&self, envelope: &Envelope, ttl: Option<Duration>) -> Result<(), PublishFailure> {
        let body = serde_json::to_vec(envelope)?;
        self.bus.publish(EXCHANGE, &envelope.routing_key(), &body, Some(self.bus.user()), ttl).await
    }

    /// Publishes any bytes under any key (tests of malformed and forged messages use this).
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        user_id: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(), PublishFailure> {
        self.bus.publish(EXCHANGE, routing_key, body, user_id, ttl).await
    }

    pub async fn close(&self) {
        self.bus.close().await;
    }
}
