//! `aos-cloud-manager-agent`: both ends of the node agents' RPC over RabbitMQ
//! (docs/adr/0012-agent.md). One binary, two roles chosen with `--role`:
//!
//! - `controller` (default; on the controllers, with the database): active only while it holds
//!   the `agent` lease and `[agent] enabled`; records node heartbeats for the node tracker.
//!   Requests to nodes ([`controller::Requester`]) are made by whoever needs them (the CLI's
//!   `node facts`), through the same code and timeouts.
//! - `node` (on every hypervisor, without database credentials): heartbeats, state files,
//!   answers to the closed set of requests ([`node`]).
//!
//! [`protocol`] defines the messages and their validation, [`transport`] the AMQP plumbing,
//! [`probe`] what a node observes, [`trust`] the broker permissions of a node user.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aos_daemon::{CheckState, DaemonContext, LeaseGrant, LeaseKeeper};
use tokio_util::sync::CancellationToken;

pub mod controller;
pub mod node;
pub mod probe;
pub mod protocol;
pub mod transport;
pub mod trust;

pub use controller::{Answer, RecorderCounters, RequestError, RequestSettings, Requester};
pub use node::{NodeCounters, NodeSettings, run_node};

pub const ROLE: &str = "agent";
pub const LEASE_NAME: &str = "agent";

/// `[agent] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.agent.logfile.as_deref()
}

/// A requester for the controller side, connected with `[DEFAULT] transport_url` and timed by
/// `[agent]`.
pub async fn connect_requester(config: &aos_config::Config) -> anyhow::Result<Requester> {
    let transport = &config.default.transport_url;
    Requester::connect(&transport.to_amqp_uri(), &transport.username, RequestSettings::from_config(config)).await
}

/// The controller role.
pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let shutdown = context.shutdown.clone();
    let mut status_task = None;
    if let Some(port) = context.config.agent.status_port {
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let (_, task) =
            aos_daemon::status::serve_status(ROLE, address, context.readiness.clone(), shutdown.clone()).await?;
        status_task = Some(task);
    }
    if !context.config.agent.enabled {
        tracing::info!("[agent] enabled = False: node management through agents is off; idling until shutdown");
        context.readiness.set("agent", CheckState::Standby("disabled by [agent] enabled = False".into()));
        shutdown.cancelled().await;
        return Ok(());
    }
    let keeper = LeaseKeeper {
        name: LEASE_NAME.to_owned(),
        holder: context.identity.clone(),
        ttl: context.config.coordination.lease_ttl,
        renew_interval: context.config.coordination.lease_renew_interval,
    };
    let (mut grants, lease_task) = keeper.spawn(context.db.clone(), context.readiness.clone(), shutdown.clone());
    let counters = Arc::new(RecorderCounters::default());
    let mut active: Option<(i64, CancellationToken, tokio::task::JoinHandle<()>)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = grants.changed() => {
                if changed.is_err() { break; }
                let generation = grants.borrow_and_update().filter(LeaseGrant::is_valid).map(|grant| grant.generation);
                if active.as_ref().map(|(held, ..)| *held) != generation {
                    if let Some((_, stop, task)) = active.take() {
                        tracing::info!(identity = %context.identity, "controller agent standing by");
                        stop.cancel();
                        let _ = task.await;
                    }
                    if let Some(generation) = generation {
                        tracing::info!(generation, identity = %context.identity, "controller agent active");
                        let stop = shutdown.child_token();
                        let task = tokio::spawn(active_controller(context.clone(), generation, counters.clone(), stop.clone()));
                        active = Some((generation, stop, task));
                    }
                }
            }
        }
    }
    if let Some((_, stop, task)) = active.take() {
        stop.cancel();
        let _ = task.await;
    }
    let _ = lease_task.await;
    if let Some(task) = status_task {
        let _ = task.await;
    }
    tracing::info!(
        heartbeats_recorded = counters.recorded.load(std::sync::atomic::Ordering::Relaxed),
        messages_dropped = counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
        "controller agent stopped"
    );
    Ok(())
}

/// The active controller's work under lease generation `generation`, reconnecting to the
/// broker until `stop`.
async fn active_controller(
    context: DaemonContext,
    generation: i64,
    counters: Arc<RecorderCounters>,
    stop: CancellationToken,
) {
    let config = &context.config;
    let transport = &config.default.transport_url;
    let uri = transport.to_amqp_uri();
    let settings = RequestSettings::from_config(config);
    let mut backoff = aos_bus::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    while !stop.is_cancelled() {
        let outcome = async {
            let bus = transport::AgentBus::connect(&uri, &transport.username, "aos-agent controller").await?;
            bus.declare_controller_topology().await?;
            context.readiness.set("broker", CheckState::Ok);
            let recorded = controller::record_heartbeats(
                &context.db,
                &bus,
                Some((LEASE_NAME, generation)),
                config.agent.heartbeat_stale_after,
                &settings,
                &counters,
                &stop,
            )
            .await;
            bus.close().await;
            recorded
        }
        .await;
        match outcome {
            Ok(()) => break,
            Err(error) => {
                if let Some(aos_db::DbError::LeaseLost { .. }) = error.downcast_ref::<aos_db::DbError>() {
                    tracing::warn!("agent lease lost: no more heartbeats recorded by this controller");
                    break;
                }
                context.readiness.set("broker", CheckState::Failing(format!("{error:#}")));
                tracing::warn!(error = %format!("{error:#}"), "controller agent failed; retrying");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
