//! The controller role: the requester (request → confirm within `agent_confirm_timeout` →
//! response within `agent_response_timeout`, resent up to `request_retries` times after
//! `backoff_factor * 2^(n-1)` seconds) and the heartbeat recorder that the active controller
//! agent (lease `agent`) runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::protocol::{self, Envelope, Heartbeat, Incoming, Kind, Request, Response};
use crate::transport::AgentBus;

/// The requester's timing and the node-user naming rule, from `[agent]`.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    pub confirm_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    pub backoff_factor: f64,
    pub node_user_prefix: String,
}

impl RequestSettings {
    pub fn from_config(config: &aos_config::Config) -> Self {
        let agent = &config.agent;
        Self {
            confirm_timeout: agent.agent_confirm_timeout,
            response_timeout: agent.agent_response_timeout,
            retries: agent.request_retries,
            backoff_factor: agent.backoff_factor,
            node_user_prefix: agent.node_user_prefix.clone(),
        }
    }

    /// The broker user node `node` must be authenticated as.
    pub fn node_user(&self, node: &str) -> String {
        format!("{}{node}", self.node_user_prefix)
    }

    /// The wait before retry `retry` (1-based): `backoff_factor * 2^(retry-1)` seconds, as
    /// urllib3's `backoff_factor` that the reference product's option is named after.
    pub fn backoff_delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(16) as i32;
        Duration::from_secs_f64((self.backoff_factor * 2_f64.powi(exponent)).clamp(0.0, 3600.0))
    }
}

/// A successful request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub response: Response,
    /// How many times the request was sent.
    pub attempts: u32,
    /// Which of those sends the response answers (an earlier one when it came late).
    pub answered_attempt: u32,
}

/// Why a request failed; every variant says how many times it was sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("node {node}: no confirm within the confirm timeout, {attempts} attempts")]
    NoConfirm { node: String, attempts: u32 },
    #[error("node {node}: confirmed but no response within the response timeout, {attempts} attempts")]
    NoResponse { node: String, attempts: u32 },
    #[error("node {node}: invalid node name")]
    InvalidNode { node: String },
    #[error("cannot publish the request: {0}")]
    Bus(String),
}

impl RequestError {
    pub fn attempts(&self) -> u32 {
        match self {
            RequestError::NoConfirm { attempts, .. } | RequestError::NoResponse { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}

enum Reply {
    Confirm(Uuid),
    Response(Uuid, Response),
}

type Pending = Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<Reply>>>>;

/// Sends requests to node agents and waits for their answers. One reply queue per requester;
/// confirms and responses are matched to requests by correlation id.
pub struct Requester {
    bus: Arc<AgentBus>,
    settings: RequestSettings,
    pending: Pending,
    dropped: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Requester {
    /// Connects as the controller user of `amqp_uri` (`user` is its user name).
    pub async fn connect(amqp_uri: &str, user: &str, settings: RequestSettings) -> anyhow::Result<Self> {
        let bus = AgentBus::connect(amqp_uri, user, "aos-agent requester").await?;
        bus.declare_controller_topology().await?;
        let mut replies = bus.reply_consumer("aos-agent-requester").await?;
        let pending: Pending = Arc::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let reader = {
            let pending = pending.clone();
            let dropped = dropped.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                while let Some(incoming) = replies.next().await {
                    route_reply(&settings, &pending, &dropped, incoming);
                }
            })
        };
        Ok(Self { bus: Arc::new(bus), settings, pending, dropped, reader })
    }

    /// Replies dropped as malformed or forged.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends `request` to `node` and waits for its answer, resending as the settings say.
    /// A response to any earlier send of the same request is accepted (every request is
    /// idempotent), so a late node costs one more send, not a failure.
    pub async fn request(&self, node: &str, request: &Request) -> Result<Answer, RequestError> {
        if protocol::check_node_name(node).is_err() {
            return Err(RequestError::InvalidNode { node: node.to_owned() });
        }
        let (sender, mut replies) = mpsc::unbounded_channel();
        let body = serde_json::to_value(request).map_err(|error| RequestError::Bus(error.to_string()))?;
        let mut sent: Vec<Uuid> = Vec::new();
        let outcome = async {
            let mut failure = RequestError::NoConfirm { node: node.to_owned(), attempts: 0 };
            for attempt in 1..=self.settings.retries + 1 {
                if attempt > 1 {
                    let delay = self.settings.backoff_delay(attempt - 1);
                    if let Some(answer) = wait_response(&mut replies, &sent, delay).await {
                        return Ok(answered(answer, &sent, attempt - 1));
                    }
                }
                let envelope = Envelope::new(Kind::Request, node, None, body.clone());
                self.pending
                    .lock()
                    .map_err(|_| RequestError::Bus("poisoned".into()))?
                    .insert(envelope.id, sender.clone());
                sent.push(envelope.id);
                // A request nobody took within the confirm timeout is stale: let it expire.
                self.bus
                    .publish(&envelope, Some(self.settings.confirm_timeout))
                    .await
                    .map_err(|error| RequestError::Bus(error.to_string()))?;
                match wait_confirm(&mut replies, &sent, envelope.id, self.settings.confirm_timeout).await {
                    Waited::Answered(id, response) => return Ok(answered((id, response), &sent, attempt)),
                    Waited::Nothing => {
                        tracing::debug!(node, attempt, "no confirm");
                        failure = RequestError::NoConfirm { node: node.to_owned(), attempts: attempt };
                        continue;
                    }
                    Waited::Confirmed => {}
                }
                match wait_response(&mut replies, &sent, self.settings.response_timeout).await {
                    Some(answer) => return Ok(answered(answer, &sent, attempt)),
                    None => {
                        tracing::debug!(node, attempt, "confirmed, no response");
                        failure = RequestError::NoResponse { node: node.to_owned(), attempts: attempt };
                    }
                }
            }
            Err(failure)
        }
        .await;
        if let Ok(mut pending) = self.pending.lock() {
            for id in &sent {
                pending.remove(id);
            }
        }
        outcome
    }

    pub async fn close(self) {
        self.reader.abort();
        self.bus.close().await;
    }
}

fn answered((id, response): (Uuid, Response), sent: &[Uuid], attempts: u32) -> Answer {
    let answered_attempt = sent.iter().position(|sent| *sent == id).map_or(attempts, |index| index as u32 + 1);
    Answer { response, attempts, answered_attempt }
}

enum Waited {
    Confirmed,
    Answered(Uuid, Response),
    Nothing,
}

/// Waits for the confirm of `current`, or for a response to any send (which implies receipt).
async fn wait_confirm(
    replies: &mut mpsc::UnboundedReceiver<Reply>,
    sent: &[Uuid],
    current: Uuid,
    limit: Duration,
) -> Waited {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, replies.recv()).await {
            Ok(Some(Reply::Confirm(id))) if id == current => return Waited::Confirmed,
            Ok(Some(Reply::Confirm(_))) => {}
            Ok(Some(Reply::Response(id, response))) if sent.contains(&id) => return Waited::Answered(id, response),
            Ok(Some(Reply::Response(..))) => {}
            Ok(None) | Err(_) => return Waited::Nothing,
        }
    }
}

/// Waits for a response to any send, ignoring confirms.
async fn wait_response(
    replies: &mut mpsc::UnboundedReceiver<Reply>,
    sent: &[Uuid],
    limit: Duration,
) -> Option<(Uuid, Response)> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, replies.recv()).await {
            Ok(Some(Reply::Response(id, response))) if sent.contains(&id) => return Some((id, response)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Validates a confirm or response and hands it to the request waiting for it. Replies to
/// other requesters' requests (every requester's queue sees all of them) are ignored quietly;
/// malformed or forged ones are logged and counted.
fn route_reply(settings: &RequestSettings, pending: &Pending, dropped: &AtomicU64, incoming: Incoming) {
    let checked = protocol::parse_envelope(&incoming, &[Kind::Confirm, Kind::Response]).and_then(|envelope| {
        protocol::check_sender(&incoming, &settings.node_user(&envelope.node))?;
        let reply = match envelope.kind {
            Kind::Response => {
                Reply::Response(envelope.correlation.unwrap_or_default(), protocol::body::<Response>(&envelope)?)
            }
            _ => Reply::Confirm(envelope.correlation.unwrap_or_default()),
        };
        Ok((envelope, reply))
    });
    match checked {
        Ok((envelope, reply)) => {
            let correlation = envelope.correlation.unwrap_or_default();
            let waiting = pending.lock().ok().and_then(|pending| pending.get(&correlation).cloned());
            if let Some(waiting) = waiting {
                let _ = waiting.send(reply);
            }
        }
        Err(error) => {
            dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(routing_key = %incoming.routing_key, user_id = ?incoming.user_id, %error, "malformed agent reply dropped");
        }
    }
}

/// What the heartbeat recorder did, for logs and tests.
#[derive(Debug, Default)]
pub struct RecorderCounters {
    pub recorded: AtomicU64,
    pub dropped: AtomicU64,
}

/// At most this many heartbeats are recorded in one transaction.
pub const HEARTBEAT_BATCH: usize = 500;
/// Heartbeats arriving this soon after a first one are recorded with it (one transaction for
/// many nodes instead of one per heartbeat: a thousand nodes every 5 s would otherwise be 200
/// transactions a second).
pub const HEARTBEAT_BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Consumes heartbeats and records them under the lease `(name, generation)` until `stop` or
/// a failure (broker gone, lease lost), which it returns.
pub async fn record_heartbeats(
    db: &aos_db::DatabaseConnection,
    bus: &AgentBus,
    lease: Option<(&str, i64)>,
    stale_after: Duration,
    settings: &RequestSettings,
    counters: &RecorderCounters,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut heartbeats = bus.consume(protocol::HEARTBEAT_QUEUE, "aos-agent-heartbeats").await?;
    let stale_after = chrono::Duration::from_std(stale_after)?;
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            incoming = heartbeats.next() => incoming,
        };
        let Some(first) = first else { anyhow::bail!("the heartbeat consumer ended") };
        let mut batch: Vec<aos_db::ReceivedHeartbeat> =
            accept_heartbeat(first, settings, stale_after, counters).into_iter().collect();
        let deadline = tokio::time::Instant::now() + HEARTBEAT_BATCH_WINDOW;
        let mut ended = false;
        while batch.len() < HEARTBEAT_BATCH {
            match tokio::time::timeout_at(deadline, heartbeats.next()).await {
                Ok(Some(incoming)) => batch.extend(accept_heartbeat(incoming, settings, stale_after, counters)),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        aos_db::record_agent_heartbeats(db, lease, &batch).await?;
        counters.recorded.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if ended {
            anyhow::bail!("the heartbeat consumer ended");
        }
    }
}

/// Validates one heartbeat (envelope, sender = the node's own broker user, body) and stamps
/// it with this controller's clock; a bad one is logged, counted and dropped.
fn accept_heartbeat(
    incoming: Incoming,
    settings: &RequestSettings,
    stale_after: chrono::Duration,
    counters: &RecorderCounters,
) -> Option<aos_db::ReceivedHeartbeat> {
    let checked = protocol::parse_envelope(&incoming, &[Kind::Heartbeat]).and_then(|envelope| {
        protocol::check_sender(&incoming, &settings.node_user(&envelope.node))?;
        let heartbeat = protocol::body::<Heartbeat>(&envelope)?;
        Ok((envelope, heartbeat))
    });
    let (envelope, heartbeat) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(routing_key = %incoming.routing_key, user_id = ?incoming.user_id, %error, "malformed heartbeat dropped");
            return None;
        }
    };
    let received_at = Utc::now();
    Some(aos_db::ReceivedHeartbeat {
        node: envelope.node,
        message_id: envelope.id.to_string(),
        sequence: i64::try_from(heartbeat.sequence).unwrap_or(i64::MAX),
        sent_at: envelope.sent_at,
        received_at,
        expires_at: received_at + stale_after,
        facts: serde_json::to_value(&heartbeat.facts).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_factor() {
        let settings = RequestSettings {
            confirm_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            retries: 3,
            backoff_factor: 0.3,
            node_user_prefix: "aos-agent-".into(),
        };
        let delays: Vec<u128> = (1..=4).map(|retry| settings.backoff_delay(retry).as_millis()).collect();
        assert_eq!(delays, vec![300, 600, 1200, 2400]);
        assert_eq!(settings.node_user("cmp-1"), "aos-agent-cmp-1");
    }
}
