//! `aos-cloud-manager-listener`: consumes Nova's versioned notifications from Nova's RabbitMQ
//! (`[listener] nova_transport_url`, or `[DEFAULT] transport_url` with the vhost replaced by
//! `[listener] nova_rabbit_vhost`). This foundation keeps the broker connection (reconnecting
//! with backoff, reported in readiness); declaring the queue and recording notifications come
//! with the OpenStack-integration issue — the queue is not declared before something consumes
//! it, so nothing piles up unread.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aos_daemon::{CheckState, DaemonContext};

pub const ROLE: &str = "listener";
const CHECK: &str = "nova_broker";

/// `[listener] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.listener.logfile.as_deref()
}

/// The AMQP URI of Nova's notification broker, from the configuration.
pub fn nova_broker_uri(config: &aos_config::Config) -> String {
    // Already resolved by the configuration: `[DEFAULT] transport_url` on `nova_rabbit_vhost`
    // unless `[listener] nova_transport_url` is set.
    config.listener.nova_transport_url.to_amqp_uri()
}

pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let shutdown = context.shutdown.clone();
    if let Some(port) = context.config.listener.status_port {
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        aos_daemon::status::serve_status(ROLE, address, context.readiness.clone(), shutdown.clone()).await?;
    }
    let uri = nova_broker_uri(&context.config);
    let name = format!("aos-cloud-manager-listener@{}", context.identity);
    context.readiness.set(CHECK, CheckState::Pending);
    while !shutdown.is_cancelled() {
        let readiness = context.readiness.clone();
        let Some(connection) = aos_bus::connect_with_backoff(&uri, &name, &shutdown, |error| {
            readiness.set(CHECK, CheckState::Failing(error.to_string()));
        })
        .await
        else {
            break;
        };
        context.readiness.set(CHECK, CheckState::Ok);
        // Watch the connection until it drops or we are asked to stop.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            if !connection.status().connected() {
                context
                    .readiness
                    .set(CHECK, CheckState::Failing("connection to Nova's broker lost; reconnecting".into()));
                break;
            }
        }
        if shutdown.is_cancelled() {
            let _ = connection.close(200, "shutdown".into()).await;
        }
    }
    Ok(())
}
