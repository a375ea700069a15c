//! The agent protocol: one JSON envelope for every message between controller and node
//! agents, the closed set of requests a node answers, and the validation every received
//! message passes before anything acts on it (docs/adr/0012-agent.md).
//!
//! Routing (topic exchange [`EXCHANGE`]): a controller publishes requests with the key
//! `request.<node>`; a node publishes `node.heartbeat.<node>`, `node.confirm.<node>` and
//! `node.response.<node>`. The node name comes last because host names contain dots (topic
//! words), and the broker's topic permissions pin each node user to its own keys.
//!
//! Every message carries the AMQP `user_id` property, which RabbitMQ validates against the
//! connection's user (a mismatch is refused by the broker). A receiver accepts a message only
//! when that authenticated user is the one expected for the sender: `<node_user_prefix><node>`
//! for a node's message, `[agent] controller_user` for a request. That is the trust model.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The protocol version in every envelope; receivers drop other versions.
pub const PROTOCOL_VERSION: u32 = 1;
/// The agents' topic exchange.
pub const EXCHANGE: &str = "aos-agent";
/// The controller's queue of heartbeats (bound to `node.heartbeat.#`).
pub const HEARTBEAT_QUEUE: &str = "aos-agent.heartbeats";
/// A message larger than this is dropped unread (a heartbeat of a node with thousands of
/// instances is a few hundred KiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Longest node name accepted (the `agent_heartbeats.node` column).
pub const MAX_NODE_NAME: usize = 255;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Heartbeat,
    Request,
    Confirm,
    Response,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Request => "request",
            Kind::Confirm => "confirm",
            Kind::Response => "response",
        }
    }
}

/// The envelope of every message. `node` is the node concerned: the sender of a heartbeat,
/// confirm or response, the addressee of a request. `correlation` is the `id` of the request a
/// confirm or response answers (absent otherwise). `sent_at` is the sender's clock, for logs
/// only: liveness is judged on the receiver's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub kind: Kind,
    pub node: String,
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Uuid>,
    pub sent_at: DateTime<Utc>,
    pub body: serde_json::Value,
}

impl Envelope {
    pub fn new(kind: Kind, node: &str, correlation: Option<Uuid>, body: serde_json::Value) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            kind,
            node: node.to_owned(),
            id: Uuid::new_v4(),
            correlation,
            sent_at: Utc::now(),
            body,
        }
    }

    /// The routing key this envelope is published with.
    pub fn routing_key(&self) -> String {
        match self.kind {
            Kind::Request => request_key(&self.node),
            kind => node_key(kind, &self.node),
        }
    }
}

/// `request.<node>`.
pub fn request_key(node: &str) -> String {
    format!("request.{node}")
}

/// `node.<kind>.<node>`.
pub fn node_key(kind: Kind, node: &str) -> String {
    format!("node.{}.{node}", kind.as_str())
}

/// The queue a node agent consumes its requests from.
pub fn node_queue(node: &str) -> String {
    format!("aos-agent.node.{node}")
}

/// The closed set of requests a node agent answers. Nothing else is ever executed on a node
/// on behalf of the bus: there is no "run this command" request, and an unknown request is a
/// malformed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Everything the node knows about itself now ([`NodeFacts`]).
    Facts,
    /// Write the state file to every storage now (instead of waiting for the interval).
    WriteStateFile,
    /// One local check.
    Check { check: LocalCheck },
}

/// The local checks a controller may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalCheck {
    /// Is a nova-compute process running?
    NovaCompute,
    /// Is libvirt running and listing domains?
    Libvirt,
    /// Is every configured storage path a directory?
    Storages,
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Response {
    Facts {
        facts: NodeFacts,
    },
    StateFileWritten {
        writes: Vec<StorageWrite>,
    },
    Check {
        check: LocalCheck,
        passed: bool,
        detail: String,
    },
    /// The request was understood but could not be carried out.
    Failed {
        message: String,
    },
}

/// A process the agent looks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    pub running: bool,
    pub pids: Vec<u32>,
}

/// The instances as the hypervisor sees them, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum InstancesSeen {
    Libvirt { instances: Vec<InstanceSeen> },
    Unavailable { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSeen {
    /// The libvirt domain UUID, which Nova sets to the server's UUID.
    pub id: String,
    /// libvirt's state name (`running`, `paused`, `shutoff`, …).
    pub state: String,
}

/// The outcome of one state-file write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageWrite {
    pub path: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a node reports about itself, in heartbeats and in answer to [`Request::Facts`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub host: String,
    pub time: DateTime<Utc>,
    pub agent_version: String,
    pub nova_compute: ProcessState,
    pub libvirt: ProcessState,
    pub instances: InstancesSeen,
    /// The storages the agent writes to and how the last write went.
    pub storages: Vec<StorageWrite>,
}

/// A heartbeat's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Counter since the agent started (a drop means a restart).
    pub sequence: u64,
    /// The agent's `heartbeat_interval` in seconds (for operators; the controller judges
    /// staleness with its own `heartbeat_stale_after`).
    pub interval_seconds: f64,
    pub facts: NodeFacts,
}

/// A delivery as it came off the broker, before validation (routing key, the
/// broker-validated AMQP `user_id` if the sender set one, body).
pub use aos_bus::TopicMessage as Incoming;

/// Why a message was dropped. Logged (with the routing key and user) and counted, never
/// answered: answering a forged message would help the forger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not a protocol envelope: {0}")]
    Envelope(String),
    #[error("protocol version {0} is not {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("invalid node name {0:?}")]
    NodeName(String),
    #[error("routing key {routing_key:?} does not match a {kind} of node {node:?}")]
    RoutingKey { routing_key: String, kind: &'static str, node: String },
    #[error("kind {0} is not expected here")]
    UnexpectedKind(&'static str),
    #[error("sender not authenticated as {expected:?} (user-id {actual:?})")]
    Sender { expected: String, actual: Option<String> },
    #[error("a {0} needs a correlation id")]
    MissingCorrelation(&'static str),
    #[error("a {0} must not carry a correlation id")]
    UnexpectedCorrelation(&'static str),
    #[error("invalid {kind} body: {reason}")]
    Body { kind: &'static str, reason: String },
}

/// Checks a node name (Nova's host name): what a state file's name and a routing key accept.
pub fn check_node_name(node: &str) -> Result<(), Malformed> {
    let valid = !node.is_empty()
        && node.len() <= MAX_NODE_NAME
        && node != "."
        && node != ".."
        && node.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid { Ok(()) } else { Err(Malformed::NodeName(node.to_owned())) }
}

/// Parses and checks an envelope: size, JSON shape, version, node name, and that the routing
/// key agrees with the envelope's kind and node. The sender check is the caller's
/// ([`check_sender`]), because who is expected depends on the receiving role.
pub fn parse_envelope(incoming: &Incoming, accepted: &[Kind]) -> Result<Envelope, Malformed> {
    if incoming.body.len() > MAX_MESSAGE_BYTES {
        return Err(Malformed::TooLarge(incoming.body.len()));
    }
    let envelope: Envelope =
        serde_json::from_slice(&incoming.body).map_err(|error| Malformed::Envelope(error.to_string()))?;
    if envelope.version != PROTOCOL_VERSION {
        return Err(Malformed::Version(envelope.version));
    }
    check_node_name(&envelope.node)?;
    if !accepted.contains(&envelope.kind) {
        return Err(Malformed::UnexpectedKind(envelope.kind.as_str()));
    }
    if envelope.routing_key() != incoming.routing_key {
        return Err(Malformed::RoutingKey {
            routing_key: incoming.routing_key.clone(),
            kind: envelope.kind.as_str(),
            node: envelope.node.clone(),
        });
    }
    match (envelope.kind, envelope.correlation) {
        (Kind::Confirm | Kind::Response, None) => return Err(Malformed::MissingCorrelation(envelope.kind.as_str())),
        (Kind::Heartbeat | Kind::Request, Some(_)) => {
            return Err(Malformed::UnexpectedCorrelation(envelope.kind.as_str()));
        }
        _ => {}
    }
    Ok(envelope)
}

/// The sender must be authenticated (broker-validated `user_id`) as `expected`.
pub fn check_sender(incoming: &Incoming, expected: &str) -> Result<(), Malformed> {
    if incoming.user_id.as_deref() == Some(expected) {
        Ok(())
    } else {
        Err(Malformed::Sender { expected: expected.to_owned(), actual: incoming.user_id.clone() })
    }
}

/// Decodes a request's body strictly: besides the closed set of variants, any field that the
/// request does not define makes it malformed (serde does not reject unknown fields of unit
/// variants in a tagged enum, so the decoded request is encoded again and compared).
pub fn request_body(envelope: &Envelope) -> Result<Request, Malformed> {
    let request: Request = body(envelope)?;
    if serde_json::to_value(&request).ok().as_ref() != Some(&envelope.body) {
        return Err(Malformed::Body { kind: "request", reason: "unknown fields".into() });
    }
    Ok(request)
}

/// Decodes an envelope's body as `T`.
pub fn body<T: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<T, Malformed> {
    serde_json::from_value(envelope.body.clone())
        .map_err(|error| Malformed::Body { kind: envelope.kind.as_str(), reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(envelope: &Envelope, user: &str) -> Incoming {
        Incoming {
            routing_key: envelope.routing_key(),
            user_id: Some(user.to_owned()),
            body: serde_json::to_vec(envelope).unwrap(),
        }
    }

    #[test]
    fn a_valid_confirm_passes_and_names_its_sender() {
        let envelope = Envelope::new(Kind::Confirm, "compute-1.example", Some(Uuid::new_v4()), serde_json::json!({}));
        let message = incoming(&envelope, "aos-agent-compute-1.example");
        assert_eq!(parse_envelope(&message, &[Kind::Confirm]).unwrap(), envelope);
        assert!(check_sender(&message, "aos-agent-compute-1.example").is_ok());
        assert!(matches!(check_sender(&message, "aos-agent-compute-2"), Err(Malformed::Sender { .. })));
    }

    #[test]
    fn a_message_published_under_another_nodes_key_is_refused() {
        let envelope = Envelope::new(Kind::Heartbeat, "compute-1", None, serde_json::json!({}));
        let mut message = incoming(&envelope, "aos-agent-compute-1");
        message.routing_key = node_key(Kind::Heartbeat, "compute-2");
        assert!(matches!(parse_envelope(&message, &[Kind::Heartbeat]), Err(Malformed::RoutingKey { .. })));
    }

    #[test]
    fn garbage_other_versions_and_bad_correlations_are_malformed() {
        let garbage = Incoming { routing_key: "node.heartbeat.x".into(), user_id: None, body: b"{not json".to_vec() };
        assert!(matches!(parse_envelope(&garbage, &[Kind::Heartbeat]), Err(Malformed::Envelope(_))));
        let mut envelope = Envelope::new(Kind::Heartbeat, "x", None, serde_json::json!({}));
        envelope.version = 2;
        assert_eq!(parse_envelope(&incoming(&envelope, "u"), &[Kind::Heartbeat]), Err(Malformed::Version(2)));
        let response = Envelope::new(Kind::Response, "x", None, serde_json::json!({}));
        assert!(matches!(
            parse_envelope(&incoming(&response, "u"), &[Kind::Response]),
            Err(Malformed::MissingCorrelation(_))
        ));
        let request = Envelope::new(Kind::Request, "x", None, serde_json::json!({}));
        assert!(matches!(
            parse_envelope(&incoming(&request, "u"), &[Kind::Heartbeat]),
            Err(Malformed::UnexpectedKind(_))
        ));
        let oversized = Incoming { routing_key: String::new(), user_id: None, body: vec![b' '; MAX_MESSAGE_BYTES + 1] };
        assert!(matches!(parse_envelope(&oversized, &[Kind::Heartbeat]), Err(Malformed::TooLarge(_))));
    }

    #[test]
    fn node_names_that_are_not_host_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "a b", "a#b", "a*b", &"x".repeat(256)] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
        for good in ["compute-1", "cmp_2.dc1.example.org"] {
            assert!(check_node_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn only_the_closed_set_of_requests_parses() {
        let facts: Request = serde_json::from_value(serde_json::json!({"request": "facts"})).unwrap();
        assert_eq!(facts, Request::Facts);
        let check: Request =
            serde_json::from_value(serde_json::json!({"request": "check", "check": "nova_compute"})).unwrap();
        assert_eq!(check, Request::Check { check: LocalCheck::NovaCompute });
        for refused in [
            serde_json::json!({"request": "exec", "command": "rm -rf /"}),
            serde_json::json!({"request": "facts", "command": "id"}),
            serde_json::json!({"request": "check", "check": "shell"}),
            serde_json::json!({"request": "check", "check": "libvirt", "args": ["-c"]}),
        ] {
            let envelope = Envelope::new(Kind::Request, "x", None, refused.clone());
            assert!(request_body(&envelope).is_err(), "{refused}");
        }
        let envelope = Envelope::new(Kind::Request, "x", None, serde_json::json!({"request": "write_state_file"}));
        assert_eq!(request_body(&envelope), Ok(Request::WriteStateFile));
    }
}
