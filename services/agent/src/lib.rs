//! `aos-cloud-manager-agent`: the controller side of the node agents (request → confirm →
//! response over RabbitMQ). Enabled by `[agent] enabled`; like the beat, one instance is active
//! across controllers, elected by the `agent` lease. The RPC itself comes with the agent issue;
//! this foundation provides the daemon life and the election.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aos_daemon::{CheckState, DaemonContext, LeaseKeeper};

pub const ROLE: &str = "agent";
pub const LEASE_NAME: &str = "agent";

/// `[agent] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.agent.logfile.as_deref()
}

pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let shutdown = context.shutdown.clone();
    if let Some(port) = context.config.agent.status_port {
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        aos_daemon::status::serve_status(ROLE, address, context.readiness.clone(), shutdown.clone()).await?;
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
    let (_grants, lease_task) = keeper.spawn(context.db.clone(), context.readiness.clone(), shutdown.clone());
    let _ = lease_task.await;
    Ok(())
}
