//! What the beat and the workers share to reach OpenStack from a daemon.

use aos_daemon::{CheckState, DaemonContext};

/// Connects to Keystone (and finds Nova and Placement in the catalog) with backoff, reporting
/// each attempt in the daemon's readiness (`openstack` check). `None` when the daemon shuts
/// down first. Keystone or Nova being down at start must not stop a daemon: the callers run
/// this in the background and use the client once it is there.
pub async fn connect_openstack(context: &DaemonContext) -> Option<aos_openstack::OpenStackClient> {
    const CHECK: &str = "openstack";
    context.readiness.set(CHECK, CheckState::Pending);
    let settings = aos_openstack::AuthSettings::from(&context.config.keystone_authtoken);
    let mut backoff = aos_bus::Backoff::default();
    loop {
        match aos_openstack::OpenStackClient::connect(settings.clone()).await {
            Ok(client) => {
                context.readiness.set(CHECK, CheckState::Ok);
                return Some(client);
            }
            Err(error) => context.readiness.set(CHECK, CheckState::Failing(error.to_string())),
        }
        tokio::select! {
            _ = context.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
