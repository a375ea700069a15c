//! The node role: runs on a hypervisor, speaks only to RabbitMQ (it has no database
//! credentials), and
//! - publishes a heartbeat every `[agent] heartbeat_interval` (processes, instances as libvirt
//!   sees them, how the last state-file writes went);
//! - writes the node's state file (ADR 0009) to every `[agent] storage_paths` entry at the same
//!   interval, whether or not the broker is reachable — the file is the node's proof of life
//!   exactly when the control plane cannot hear it;
//! - answers the closed set of requests ([`Request`]) from the controller user only: a confirm
//!   at once, then the response.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aos_daemon::{CheckState, Readiness};
use tokio_util::sync::CancellationToken;

use crate::probe;
use crate::protocol::{
    self, Envelope, Heartbeat, Incoming, InstancesSeen, Kind, LocalCheck, Request, Response, StorageWrite,
};
use crate::transport::AgentBus;

/// Everything the node role needs, from `[DEFAULT] host`, `[DEFAULT] transport_url` and
/// `[agent]`.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This node's name: Nova's hypervisor host name (`[DEFAULT] host`, else the hostname).
    pub node: String,
    /// Contains the password: never log it.
    pub amqp_uri: String,
    /// The broker user of `amqp_uri` (what the broker validates our `user_id` against).
    pub user: String,
    pub controller_user: String,
    pub heartbeat_interval: Duration,
    pub storage_paths: Vec<PathBuf>,
    /// Fault injection for the protocol's integration tests; always [`Answering::Normal`]
    /// from a configuration.
    #[doc(hidden)]
    pub answering: Answering,
}

impl NodeSettings {
    pub fn from_config(config: &aos_config::Config) -> Self {
        let transport = &config.default.transport_url;
        Self {
            node: config.default.host.clone(),
            amqp_uri: transport.to_amqp_uri(),
            user: transport.username.clone(),
            controller_user: config.agent.controller_user.clone(),
            heartbeat_interval: config.agent.heartbeat_interval,
            storage_paths: config.agent.storage_paths.clone(),
            answering: Answering::Normal,
        }
    }
}

/// How a node answers requests. Only tests choose anything but `Normal`, to play the node
/// that never answers, the one that confirms and never responds, and the one that is late.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    Normal,
    Silent,
    ConfirmOnly,
    Late(Duration),
}

/// What a node agent did, for logs and tests.
#[derive(Debug, Default)]
pub struct NodeCounters {
    pub heartbeats_sent: AtomicU64,
    pub requests_answered: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub state_file_rounds: AtomicU64,
}

/// What the state-file writer last saw, shared with the heartbeat (so a slow `virsh` delays
/// neither).
#[derive(Debug, Clone)]
struct LastRound {
    instances: InstancesSeen,
    writes: Vec<StorageWrite>,
}

/// Runs the node role until `shutdown`.
pub async fn run_node(
    settings: NodeSettings,
    readiness: Readiness,
    counters: Arc<NodeCounters>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    protocol::check_node_name(&settings.node)
        .map_err(|error| anyhow::anyhow!("[DEFAULT] host: {error}: the node agent needs Nova's host name"))?;
    let settings = Arc::new(settings);
    let last = Arc::new(Mutex::new(LastRound {
        instances: InstancesSeen::Unavailable { reason: "not read yet".into() },
        writes: Vec::new(),
    }));
    let writer = tokio::spawn(state_file_loop(settings.clone(), last.clone(), counters.clone(), shutdown.clone()));
    readiness.set("broker", CheckState::Pending);
    let connection_name = format!("aos-agent node {}", settings.node);
    while !shutdown.is_cancelled() {
        let readiness_on_failure = readiness.clone();
        let Some(bus) = connect(&settings, &connection_name, &shutdown, move |error| {
            readiness_on_failure.set("broker", CheckState::Failing(error.to_string()));
        })
        .await
        else {
            break;
        };
        readiness.set("broker", CheckState::Ok);
        tracing::info!(node = %settings.node, "node agent connected to RabbitMQ");
        serve(&settings, Arc::new(bus), &last, &counters, &shutdown).await;
        readiness.set("broker", CheckState::Failing("connection lost".into()));
    }
    let _ = writer.await;
    Ok(())
}

/// Connects and declares the node's queue, retrying with backoff (the exchange may not exist
/// until a controller agent has run once).
async fn connect(
    settings: &NodeSettings,
    connection_name: &str,
    shutdown: &CancellationToken,
    mut on_failure: impl FnMut(&str),
) -> Option<AgentBus> {
    let mut backoff = aos_bus::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let attempt = async {
            let bus = AgentBus::connect(&settings.amqp_uri, &settings.user, connection_name)
                .await
                .map_err(|error| error.to_string())?;
            match bus.declare_node_topology(&settings.node).await {
                Ok(()) => Ok(bus),
                Err(error) => {
                    bus.close().await;
                    Err(format!("cannot declare the node's request queue: {error}"))
                }
            }
        };
        match attempt.await {
            Ok(bus) => return Some(bus),
            Err(error) => {
                tracing::warn!(node = %settings.node, %error, "node agent cannot use RabbitMQ; retrying");
                on_failure(&error);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Heartbeats and requests on one connection, until it fails or `shutdown`.
async fn serve(
    settings: &Arc<NodeSettings>,
    bus: Arc<AgentBus>,
    last: &Arc<Mutex<LastRound>>,
    counters: &Arc<NodeCounters>,
    shutdown: &CancellationToken,
) {
    let queue = protocol::node_queue(&settings.node);
    let mut requests = match bus.consume(&queue, &format!("aos-agent-node-{}", settings.node)).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot consume the node's request queue");
            bus.close().await;
            return;
        }
    };
    let mut ticker = tokio::time::interval(settings.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence = 0_u64;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                sequence += 1;
                let round = last.lock().map(|round| round.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone());
                let facts = probe_facts(&settings.node, round).await;
                let body = Heartbeat { sequence, interval_seconds: settings.heartbeat_interval.as_secs_f64(), facts };
                let envelope = Envelope::new(Kind::Heartbeat, &settings.node, None, to_json(&body));
                // A heartbeat older than three intervals says nothing any more.
                match bus.publish(&envelope, Some(settings.heartbeat_interval * 3)).await {
                    Ok(()) => { counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed); }
                    Err(error) => {
                        tracing::warn!(%error, "heartbeat not published; reconnecting");
                        break;
                    }
                }
            }
            incoming = requests.next() => {
                let Some(incoming) = incoming else {
                    tracing::warn!("request consumer ended; reconnecting");
                    break;
                };
                match accept_request(settings, &incoming) {
                    Ok((envelope, request)) => {
                        in_flight.spawn(answer(settings.clone(), bus.clone(), last.clone(), counters.clone(), envelope, request));
                    }
                    Err(error) => {
                        counters.messages_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(routing_key = %incoming.routing_key, user_id = ?incoming.user_id, %error, "malformed request dropped");
                    }
                }
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    in_flight.abort_all();
    bus.close().await;
}

/// Validates a delivery as a request to this node from the controller user.
fn accept_request(settings: &NodeSettings, incoming: &Incoming) -> Result<(Envelope, Request), protocol::Malformed> {
    let envelope = protocol::parse_envelope(incoming, &[Kind::Request])?;
    protocol::check_sender(incoming, &settings.controller_user)?;
    if envelope.node != settings.node {
        return Err(protocol::Malformed::RoutingKey {
            routing_key: incoming.routing_key.clone(),
            kind: "request",
            node: envelope.node,
        });
    }
    let request = protocol::request_body(&envelope)?;
    Ok((envelope, request))
}

/// Confirms, carries out and responds to one request (as [`Answering`] says).
async fn answer(
    settings: Arc<NodeSettings>,
    bus: Arc<AgentBus>,
    last: Arc<Mutex<LastRound>>,
    counters: Arc<NodeCounters>,
    request_envelope: Envelope,
    request: Request,
) {
    if settings.answering == Answering::Silent {
        return;
    }
    let node = settings.node.as_str();
    let correlation = Some(request_envelope.id);
    let confirm = Envelope::new(Kind::Confirm, node, correlation, serde_json::json!({}));
    if let Err(error) = bus.publish(&confirm, None).await {
        tracing::warn!(%error, "confirm not published");
        return;
    }
    if settings.answering == Answering::ConfirmOnly {
        return;
    }
    let response = carry_out(&settings, &last, request).await;
    if let Answering::Late(delay) = settings.answering {
        tokio::time::sleep(delay).await;
    }
    let envelope = Envelope::new(Kind::Response, node, correlation, to_json(&response));
    match bus.publish(&envelope, None).await {
        Ok(()) => {
            counters.requests_answered.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "response not published"),
    }
}

async fn carry_out(settings: &NodeSettings, last: &Mutex<LastRound>, request: Request) -> Response {
    match request {
        Request::Facts => {
            let writes = last.lock().map(|round| round.writes.clone()).unwrap_or_default();
            Response::Facts { facts: probe::facts(&settings.node, writes).await }
        }
        Request::WriteStateFile => {
            let instances = probe::instances().await;
            let writes = write_round(settings, &instances).await;
            if let Ok(mut round) = last.lock() {
                *round = LastRound { instances, writes: writes.clone() };
            }
            Response::StateFileWritten { writes }
        }
        Request::Check { check } => {
            let (passed, detail) = match check {
                LocalCheck::NovaCompute => {
                    let state = probe::nova_compute();
                    (state.running, format!("nova-compute pids {:?}", state.pids))
                }
                LocalCheck::Libvirt => match probe::instances().await {
                    InstancesSeen::Libvirt { instances } => {
                        (true, format!("libvirt lists {} domains", instances.len()))
                    }
                    InstancesSeen::Unavailable { reason } => (false, reason),
                },
                LocalCheck::Storages => {
                    let missing: Vec<String> = settings
                        .storage_paths
                        .iter()
                        .filter(|path| !path.is_dir())
                        .map(|path| path.display().to_string())
                        .collect();
                    if missing.is_empty() {
                        (true, format!("{} storages mounted", settings.storage_paths.len()))
                    } else {
                        (false, format!("not mounted: {}", missing.join(", ")))
                    }
                }
            };
            Response::Check { check, passed, detail }
        }
    }
}

async fn probe_facts(node: &str, round: LastRound) -> protocol::NodeFacts {
    protocol::NodeFacts {
        host: node.to_owned(),
        time: chrono::Utc::now(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        nova_compute: probe::nova_compute(),
        libvirt: probe::libvirt(),
        instances: round.instances,
        storages: round.writes,
    }
}

/// Writes the state file every interval, independent of the broker.
async fn state_file_loop(
    settings: Arc<NodeSettings>,
    last: Arc<Mutex<LastRound>>,
    counters: Arc<NodeCounters>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(settings.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let instances = probe::instances().await;
        let writes = write_round(&settings, &instances).await;
        counters.state_file_rounds.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut round) = last.lock() {
            *round = LastRound { instances, writes };
        }
    }
}

async fn write_round(settings: &NodeSettings, instances: &InstancesSeen) -> Vec<StorageWrite> {
    if settings.storage_paths.is_empty() {
        return Vec::new();
    }
    let file = probe::state_file(&settings.node, instances);
    let writes = probe::write_state_files(&settings.storage_paths, &file).await;
    for write in writes.iter().filter(|write| !write.ok) {
        tracing::warn!(path = %write.path, error = ?write.error, "state file not written");
    }
    writes
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // Our own types always serialise (no maps with non-string keys, no failing impls).
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
