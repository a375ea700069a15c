//! RabbitMQ for aos-cloud-manager: the only crate that knows lapin. It owns connecting with
//! exponential backoff (a broker restart must never crash a daemon), the topology
//! (exchanges, queues, bindings) declared in one place ([`topology`]), consuming in batches
//! acknowledged after the work is durable ([`consume`]), publishing with pipelined
//! publisher confirms ([`publish`]), and small authenticated messages on a topic exchange
//! ([`topic`], the agent's transport).

pub mod backoff;
pub mod consume;
pub mod publish;
pub mod topic;
pub mod topology;

use lapin::ConnectionProperties;

pub use backoff::Backoff;
pub use consume::{Batch, BatchAck, BatchConsumer, BatchLimits, NextBatch};
pub use lapin;
/// A broker connection (lapin's), so that callers need not name lapin.
pub use lapin::Connection;
pub use publish::{ConfirmedPublisher, PublishError};
pub use topic::{TopicBus, TopicMessage, TopicPublishError, TopicStream};
pub use topology::{
    DeclareReport, TopicSubscription, declare_topic_subscription, delete_topic_subscription, queue_depth,
};

/// A broker failure, with the URI's password already masked.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to RabbitMQ at {uri}: {source}")]
    Connect {
        uri: String,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ operation failed: {0}")]
    Operation(#[from] lapin::Error),
}

/// Replaces the password of an `amqp://user:pass@host/vhost` URI by `***` for messages.
pub fn mask_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &uri[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &uri[..scheme_end + 3], &credentials[..colon], &uri[at..]),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

/// Bound on one connection attempt (TCP, AMQP handshake, login): a broker that accepts the
/// TCP connection but never answers (still booting, overloaded) must not hold a daemon's
/// reconnect loop forever.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Bound on closing a channel or a connection: lapin waits for the broker's `close-ok`, which
/// never comes from a broker that went away while the socket still looked open.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One connection attempt, at most [`CONNECT_TIMEOUT`]. `connection_name` shows in the
/// RabbitMQ management UI.
pub async fn connect(uri: &str, connection_name: &str) -> Result<Connection, BusError> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(uri, properties)).await {
        Ok(connected) => connected.map_err(|source| BusError::Connect { uri: mask_uri(uri), source }),
        Err(_) => Err(BusError::Connect {
            uri: mask_uri(uri),
            source: lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no AMQP handshake within {CONNECT_TIMEOUT:?}"),
            )),
        }),
    }
}

/// Closes `connection` politely if it is still open, at most [`CLOSE_TIMEOUT`] (errors are
/// irrelevant at that point).
pub async fn close(connection: &Connection) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await;
    }
}

/// Closes `channel` if it is still open, at most [`CLOSE_TIMEOUT`].
pub(crate) async fn close_channel(channel: &lapin::Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "OK".into())).await;
    }
}

/// Connects, retrying with exponential backoff until it succeeds or `shutdown` is cancelled
/// (then `None`). `on_failure` sees every failed attempt (readiness reporting).
pub async fn connect_with_backoff(
    uri: &str,
    connection_name: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    on_failure: impl FnMut(&BusError),
) -> Option<Connection> {
    connect_retrying(uri, connection_name, shutdown, Backoff::default(), on_failure).await
}

/// [`connect_with_backoff`] with the caller's delays (e.g. a short maximum for a consumer
/// whose absence loses messages, like the listener on a transient exchange).
pub async fn connect_retrying(
    uri: &str,
    connection_name: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut backoff: Backoff,
    mut on_failure: impl FnMut(&BusError),
) -> Option<Connection> {
    loop {
        match connect(uri, connection_name).await {
            Ok(connection) => return Some(connection),
            Err(error) => on_failure(&error),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_password_only() {
        assert_eq!(mask_uri("amqp://aos:s3cret@127.0.0.1:5672/%2F"), "amqp://aos:***@127.0.0.1:5672/%2F");
        assert_eq!(mask_uri("amqp://127.0.0.1:5672/aos"), "amqp://127.0.0.1:5672/aos");
        assert_eq!(mask_uri("amqp://user@h/v"), "amqp://user@h/v");
    }
}
