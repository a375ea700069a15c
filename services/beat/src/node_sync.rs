//! Node sync (`[node_sync]`): mirror Nova's compute hosts into `nodes` every `sync_interval`.
//! Two bulk calls per sync whatever the number of hosts (compute services and hypervisors),
//! then one lease-guarded transaction (`aos_db::sync_nodes`).

use std::collections::BTreeMap;

use aos_db::{NodeSyncReport, ObservedComputeHost};
use aos_openstack::{OpenStackClient, ServiceState, ServiceStatus};

/// Nova's view of every compute host: its nova-compute service, and the hypervisor it owns.
pub async fn observe(client: &OpenStackClient) -> anyhow::Result<Vec<ObservedComputeHost>> {
    let services = client.compute_services().await?;
    let hypervisors: BTreeMap<String, String> =
        client.hypervisors().await?.into_iter().map(|hypervisor| (hypervisor.service_host, hypervisor.id)).collect();
    Ok(services
        .into_iter()
        .filter(|service| service.binary == "nova-compute")
        .map(|service| ObservedComputeHost {
            hypervisor_id: hypervisors.get(&service.host).cloned(),
            status: match service.status {
                ServiceStatus::Enabled => "enabled",
                ServiceStatus::Disabled => "disabled",
                ServiceStatus::Unknown => "unknown",
            }
            .to_owned(),
            state: match service.state {
                ServiceState::Up => "up",
                ServiceState::Down => "down",
                ServiceState::Unknown => "unknown",
            }
            .to_owned(),
            forced_down: service.forced_down,
            service_id: Some(service.id),
            host: service.host,
        })
        .collect())
}

/// One sync. `lease` is the beat's (name, generation); `None` for an operator's `node sync`.
pub async fn sync_once(
    db: &aos_db::DatabaseConnection,
    client: &OpenStackClient,
    lease: Option<(&str, i64)>,
    actor: &str,
) -> anyhow::Result<NodeSyncReport> {
    let observed = observe(client).await?;
    Ok(aos_db::sync_nodes(db, lease, actor, &observed).await?)
}
