//! `aos-cloud-manager-worker`: executes jobs (fence, force-down, evacuate, live-migrate, power
//! actions). Every controller runs one; they compete for tasks. This foundation provides the
//! daemon life (registration, readiness, ordered shutdown); task execution is added with the
//! jobs layer (see docs/adr/0004-jobs.md for the design and its status).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aos_daemon::{CheckState, DaemonContext};

pub const ROLE: &str = "worker";

/// `[worker] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.worker.logfile.as_deref()
}

pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let shutdown = context.shutdown.clone();
    if let Some(port) = context.config.worker.status_port {
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        aos_daemon::status::serve_status(ROLE, address, context.readiness.clone(), shutdown.clone()).await?;
    }
    context.readiness.set("jobs", CheckState::Ok);
    shutdown.cancelled().await;
    Ok(())
}
