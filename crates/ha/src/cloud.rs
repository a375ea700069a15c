//! The cloud as the HA core sees it: a small interface over Nova (and Placement), implemented
//! by the real client ([`OpenStackCloud`]) and by the simulated cloud ([`crate::sim::SimCloud`]).
//!
//! Everything the node tracker and the recovery task do to the cloud goes through [`Cloud`],
//! so the decision code is the same against the real Nova, the simulated cloud of the demo
//! and the benchmark, and whatever is added later.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use aos_openstack::{MigrationFilter, MigrationType, OpenStackClient, OpenStackError, ServerFilter};

/// The server metadata key holding a server's recovery priority: `0` = never evacuate
/// automatically, `10` = first; absent or not a number = `[host_tasks] recovery_priority`.
pub const RECOVERY_PRIORITY_KEY: &str = "aos:recovery_priority";

/// How far before the failure [`OpenStackCloud::servers_now`] lists changed servers: the
/// failure time is our clock, `changes-since` compares with Nova's database clock.
pub const CHANGES_SINCE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Nova's view of one nova-compute service, as observed in one bulk call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostObservation {
    pub host: String,
    pub service_id: String,
    /// Nova hears the service's heartbeat (false when it is forced down, too).
    pub up: bool,
    pub enabled: bool,
    pub forced_down: bool,
}

/// A server on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudServer {
    pub id: String,
    pub name: String,
    pub host: Option<String>,
    /// API status: ACTIVE, SHUTOFF, ERROR, REBUILD, ...
    pub status: String,
    /// active, stopped, error, ...
    pub vm_state: Option<String>,
    pub task_state: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub vcpus: u64,
    pub ram_mb: u64,
}

/// An evacuation Nova recorded (`os-migrations`, type `evacuation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationRecord {
    pub server_id: String,
    pub source_host: Option<String>,
    pub dest_host: Option<String>,
    pub status: String,
}

impl EvacuationRecord {
    /// Nova gave up on it: a new evacuation may be requested.
    pub fn failed(&self) -> bool {
        matches!(self.status.as_str(), "error" | "failed" | "cancelled")
    }
}

/// Room left on one host for evacuated servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapacity {
    pub host: String,
    pub free_vcpus: u64,
    pub free_ram_mb: u64,
}

/// A host aggregate a host belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAggregate {
    pub id: i64,
    pub name: String,
    /// Every host of the aggregate.
    pub hosts: Vec<String>,
}

/// Why a cloud call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. the compute service is still up,
    /// the server is in a task).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Worth retrying (timeouts, 5xx, connection errors).
    #[error("cloud unavailable: {0}")]
    Transient(String),
    #[error("{0}")]
    Other(String),
}

impl CloudError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CloudError::Transient(_))
    }
}

impl From<OpenStackError> for CloudError {
    fn from(error: OpenStackError) -> Self {
        let text = error.to_string();
        if matches!(error, OpenStackError::ServiceInUse { .. }) {
            return CloudError::Conflict(text);
        }
        match error.status() {
            Some(404) => CloudError::NotFound(text),
            Some(409) => CloudError::Conflict(text),
            _ if error.is_transient() => CloudError::Transient(text),
            _ => CloudError::Other(text),
        }
    }
}

/// What the HA core needs from the cloud.
#[async_trait]
pub trait Cloud: Send + Sync + 'static {
    /// Every nova-compute service (one bulk call whatever the number of hosts).
    async fn compute_hosts(&self) -> Result<Vec<HostObservation>, CloudError>;
    /// Sets or clears `forced_down` on a nova-compute service.
    async fn set_forced_down(&self, service_id: &str, forced_down: bool) -> Result<(), CloudError>;
    /// The servers Nova places on `host`, across projects.
    async fn servers_on_host(&self, host: &str) -> Result<Vec<CloudServer>, CloudError>;
    async fn server(&self, server_id: &str) -> Result<CloudServer, CloudError>;
    /// The servers `ids` as the cloud sees them now, each with its own answer (a deleted
    /// server is `NotFound`). This default asks for each one; a cloud that can list the servers
    /// changed since `since` in one call (Nova's `changes-since`) does that and asks only for the
    /// servers that listing does not hold.
    async fn servers_now(
        &self,
        ids: &[String],
        since: DateTime<Utc>,
    ) -> BTreeMap<String, Result<CloudServer, CloudError>> {
        let _ = since;
        let mut answers = BTreeMap::new();
        for id in ids {
            answers.insert(id.clone(), self.server(id).await);
        }
        answers
    }
    /// Rebuilds the server on another host chosen by the scheduler, keeping its state
    /// (a stopped server stays stopped).
    async fn evacuate(&self, server_id: &str) -> Result<(), CloudError>;
    /// Evacuations away from `host` updated since `since`.
    async fn evacuations_from(&self, host: &str, since: DateTime<Utc>) -> Result<Vec<EvacuationRecord>, CloudError>;
    /// Free room on each host the scheduler may use (up, enabled, not forced down).
    async fn capacities(&self) -> Result<Vec<HostCapacity>, CloudError>;
    /// Enables a compute service, or disables it with a reason.
    async fn set_service_enabled(&self, service_id: &str, enabled: bool, reason: &str) -> Result<(), CloudError>;
    /// The aggregates `host` is a member of.
    async fn aggregates_of(&self, host: &str) -> Result<Vec<HostAggregate>, CloudError>;
    /// Adds `host` to an aggregate (a host already there is fine).
    async fn add_to_aggregate(&self, aggregate_id: i64, host: &str) -> Result<(), CloudError>;
}

/// Room for the servers of a failed `host`: on the hosts that share an aggregate with it when it
/// is in any (its servers' flavors, availability zone and the operator's grouping point there),
/// otherwise on every usable host.
pub async fn capacities_near(cloud: &dyn Cloud, host: &str) -> Result<Vec<HostCapacity>, CloudError> {
    let capacities = cloud.capacities().await?;
    let aggregates = cloud.aggregates_of(host).await?;
    if aggregates.is_empty() {
        return Ok(capacities);
    }
    let peers: std::collections::BTreeSet<&str> =
        aggregates.iter().flat_map(|aggregate| aggregate.hosts.iter().map(String::as_str)).collect();
    Ok(capacities.into_iter().filter(|capacity| peers.contains(capacity.host.as_str())).collect())
}

impl From<HostObservation> for aos_db::ObservedComputeHost {
    fn from(host: HostObservation) -> Self {
        aos_db::ObservedComputeHost {
            host: host.host,
            service_id: Some(host.service_id),
            status: if host.enabled { "enabled" } else { "disabled" }.to_owned(),
            state: if host.up { "up" } else { "down" }.to_owned(),
            forced_down: host.forced_down,
            hypervisor_id: None,
        }
    }
}

/// Mirrors the cloud's compute hosts that `keep` accepts into `nodes` (aos_db::sync_nodes,
/// without a lease): the simulated cloud of the demo and the benchmarks, and tests that watch
/// only hosts of their own on the shared test cloud.
pub async fn sync_nodes_from(
    db: &aos_db::DatabaseConnection,
    cloud: &dyn Cloud,
    keep: impl Fn(&str) -> bool,
    actor: &str,
) -> anyhow::Result<aos_db::NodeSyncReport> {
    let observed: Vec<aos_db::ObservedComputeHost> =
        cloud.compute_hosts().await?.into_iter().filter(|host| keep(&host.host)).map(Into::into).collect();
    Ok(aos_db::sync_nodes(db, None, actor, &observed).await?)
}

/// [`Cloud`] over the real Nova and Placement.
pub struct OpenStackCloud {
    client: OpenStackClient,
}

impl OpenStackCloud {
    pub fn new(client: OpenStackClient) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &OpenStackClient {
        &self.client
    }
}

fn cloud_server(server: aos_openstack::Server) -> CloudServer {
    let (vcpus, ram_mb) = server.flavor.as_ref().map(|flavor| (flavor.vcpus, flavor.ram_mb)).unwrap_or((0, 0));
    CloudServer {
        id: server.id,
        name: server.name,
        host: server.host,
        status: server.status,
        vm_state: server.vm_state,
        task_state: server.task_state,
        metadata: server.metadata,
        vcpus,
        ram_mb,
    }
}

#[async_trait]
impl Cloud for OpenStackCloud {
    async fn compute_hosts(&self) -> Result<Vec<HostObservation>, CloudError> {
        Ok(self
            .client
            .compute_services()
            .await?
            .into_iter()
            .filter(|service| service.binary == "nova-compute")
            .map(|service| HostObservation {
                up: service.state == aos_openstack::ServiceState::Up,
                enabled: service.status == aos_openstack::ServiceStatus::Enabled,
                forced_down: service.forced_down,
                service_id: service.id,
                host: service.host,
            })
            .collect())
    }

    async fn set_forced_down(&self, service_id: &str, forced_down: bool) -> Result<(), CloudError> {
        self.client.set_forced_down(service_id, forced_down).await?;
        Ok(())
    }

    async fn servers_on_host(&self, host: &str) -> Result<Vec<CloudServer>, CloudError> {
        let filter = ServerFilter { host: Some(host.to_owned()), all_tenants: true, ..ServerFilter::default() };
        Ok(self.client.servers(&filter).await?.into_iter().map(cloud_server).collect())
    }

    async fn server(&self, server_id: &str) -> Result<CloudServer, CloudError> {
        Ok(cloud_server(self.client.server(server_id).await?))
    }

    /// One `GET /servers/detail?all_tenants=1&changes-since=…` for every server touched since
    /// `since` (less [`CHANGES_SINCE_MARGIN`] for clock differences with Nova's database); a
    /// server that listing does not hold (untouched since, or the listing failed) is asked for
    /// on its own.
    async fn servers_now(
        &self,
        ids: &[String],
        since: DateTime<Utc>,
    ) -> BTreeMap<String, Result<CloudServer, CloudError>> {
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let mut answers = BTreeMap::new();
        let filter = ServerFilter {
            all_tenants: true,
            changes_since: Some(since - CHANGES_SINCE_MARGIN),
            ..ServerFilter::default()
        };
        match self.client.servers(&filter).await {
            Ok(changed) => {
                for server in changed.into_iter().filter(|server| wanted.contains(server.id.as_str())) {
                    let id = server.id.clone();
                    let answer = if server.status == "DELETED" {
                        Err(CloudError::NotFound(format!("server {id} was deleted")))
                    } else {
                        Ok(cloud_server(server))
                    };
                    answers.insert(id, answer);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "listing the servers changed since the failure failed; asking one by one")
            }
        }
        for id in ids {
            if !answers.contains_key(id) {
                answers.insert(id.clone(), self.server(id).await);
            }
        }
        answers
    }

    async fn evacuate(&self, server_id: &str) -> Result<(), CloudError> {
        Ok(self.client.evacuate(server_id, None).await?)
    }

    async fn evacuations_from(&self, host: &str, since: DateTime<Utc>) -> Result<Vec<EvacuationRecord>, CloudError> {
        let filter = MigrationFilter {
            host: Some(host.to_owned()),
            migration_type: Some(MigrationType::Evacuation),
            changes_since: Some(since),
            ..MigrationFilter::default()
        };
        Ok(self
            .client
            .migrations(&filter)
            .await?
            .into_iter()
            .filter(|migration| migration.source_compute.as_deref() == Some(host))
            .map(|migration| EvacuationRecord {
                server_id: migration.instance_uuid,
                source_host: migration.source_compute,
                dest_host: migration.dest_compute,
                status: migration.status,
            })
            .collect())
    }

    async fn capacities(&self) -> Result<Vec<HostCapacity>, CloudError> {
        let usable: BTreeMap<String, ()> = self
            .compute_hosts()
            .await?
            .into_iter()
            .filter(|host| host.up && host.enabled && !host.forced_down)
            .map(|host| (host.host, ()))
            .collect();
        Ok(self
            .client
            .capacities()
            .await?
            .into_iter()
            .filter(|provider| usable.contains_key(&provider.name))
            .map(|provider| {
                let free =
                    |class: &str| provider.resources.get(class).map(|r| r.capacity.saturating_sub(r.used)).unwrap_or(0);
                HostCapacity { host: provider.name.clone(), free_vcpus: free("VCPU"), free_ram_mb: free("MEMORY_MB") }
            })
            .collect())
    }

    async fn set_service_enabled(&self, service_id: &str, enabled: bool, reason: &str) -> Result<(), CloudError> {
        if enabled {
            self.client.enable_service(service_id).await?;
        } else {
            self.client.disable_service(service_id, reason).await?;
        }
        Ok(())
    }

    async fn aggregates_of(&self, host: &str) -> Result<Vec<HostAggregate>, CloudError> {
        Ok(self
            .client
            .aggregates()
            .await?
            .into_iter()
            .filter(|aggregate| aggregate.hosts.iter().any(|h| h == host))
            .map(|aggregate| HostAggregate { id: aggregate.id, name: aggregate.name, hosts: aggregate.hosts })
            .collect())
    }

    async fn add_to_aggregate(&self, aggregate_id: i64, host: &str) -> Result<(), CloudError> {
        match self.client.aggregate_add_host(aggregate_id, host).await {
            Ok(_) => Ok(()),
            // 409: the host is already a member.
            Err(error) if error.status() == Some(409) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// A [`Cloud`] that becomes the real one once connected (daemons connect to Keystone in the
/// background: an outage at start must not stop them). Until then every call fails as
/// transient, so a task waits and retries instead of failing.
#[derive(Clone, Default)]
pub struct LazyCloud {
    cell: std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<dyn Cloud>>>,
}

impl LazyCloud {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the cloud; later calls are ignored.
    pub fn set(&self, cloud: std::sync::Arc<dyn Cloud>) {
        let _ = self.cell.set(cloud);
    }

    pub fn is_connected(&self) -> bool {
        self.cell.initialized()
    }

    fn get(&self) -> Result<&std::sync::Arc<dyn Cloud>, CloudError> {
        self.cell.get().ok_or_else(|| CloudError::Transient("not connected to OpenStack yet".into()))
    }
}

#[async_trait]
impl Cloud for LazyCloud {
    async fn compute_hosts(&self) -> Result<Vec<HostObservation>, CloudError> {
        self.get()?.compute_hosts().await
    }

    async fn set_forced_down(&self, service_id: &str, forced_down: bool) -> Result<(), CloudError> {
        self.get()?.set_forced_down(service_id, forced_down).await
    }

    async fn servers_on_host(&self, host: &str) -> Result<Vec<CloudServer>, CloudError> {
        self.get()?.servers_on_host(host).await
    }

    async fn server(&self, server_id: &str) -> Result<CloudServer, CloudError> {
        self.get()?.server(server_id).await
    }

    async fn servers_now(
        &self,
        ids: &[String],
        since: DateTime<Utc>,
    ) -> BTreeMap<String, Result<CloudServer, CloudError>> {
        match self.get() {
            Ok(cloud) => cloud.servers_now(ids, since).await,
            Err(error) => ids.iter().map(|id| (id.clone(), Err(error.clone()))).collect(),
        }
    }

    async fn evacuate(&self, server_id: &str) -> Result<(), CloudError> {
        self.get()?.evacuate(server_id).await
    }

    async fn evacuations_from(&self, host: &str, since: DateTime<Utc>) -> Result<Vec<EvacuationRecord>, CloudError> {
        self.get()?.evacuations_from(host, since).await
    }

    async fn capacities(&self) -> Result<Vec<HostCapacity>, CloudError> {
        self.get()?.capacities().await
    }

    async fn set_service_enabled(&self, service_id: &str, enabled: bool, reason: &str) -> Result<(), CloudError> {
        self.get()?.set_service_enabled(service_id, enabled, reason).await
    }

    async fn aggregates_of(&self, host: &str) -> Result<Vec<HostAggregate>, CloudError> {
        self.get()?.aggregates_of(host).await
    }

    async fn add_to_aggregate(&self, aggregate_id: i64, host: &str) -> Result<(), CloudError> {
        self.get()?.add_to_aggregate(aggregate_id, host).await
    }
}
