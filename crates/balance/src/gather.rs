//! The planner's input from the real cloud: an aggregate's hosts with their Placement capacity
//! and usage, the servers on them with their flavors, and the server groups.
//!
//! [`CloudSnapshot::read`] makes the bulk calls once (aggregates, compute services,
//! hypervisors, Placement capacities, all servers, all server groups: a fixed number of calls
//! whatever the number of hosts); [`CloudSnapshot::input_for`] then builds one aggregate's
//! input without I/O, so several aggregates cost one read, and the rules (which hosts are
//! left out and why, which servers stay) are unit-tested on hand-made snapshots.

use std::collections::{BTreeMap, BTreeSet};

use aos_openstack::{
    Aggregate, ComputeService, Hypervisor, OpenStackClient, OpenStackError, ProviderCapacity, Server as NovaServer,
    ServerFilter, ServerGroup as NovaServerGroup, ServiceState, ServiceStatus,
};
use serde::Serialize;

use crate::model::{BalanceInput, Capacity, GroupPolicy, Host, Server, ServerGroup};

/// Server metadata that keeps a server where it is: `aos:balancing=deny`.
pub const BALANCING_METADATA_KEY: &str = "aos:balancing";
pub const BALANCING_DENY: &str = "deny";

/// Everything balancing reads from the cloud, at one moment.
#[derive(Debug, Clone, Default)]
pub struct CloudSnapshot {
    pub aggregates: Vec<Aggregate>,
    pub services: Vec<ComputeService>,
    pub hypervisors: Vec<Hypervisor>,
    pub capacities: Vec<ProviderCapacity>,
    pub servers: Vec<NovaServer>,
    pub groups: Vec<NovaServerGroup>,
}

/// A host of the aggregate that is not balanced, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub host: String,
    pub reason: String,
}

/// One aggregate's input and the hosts left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    pub input: BalanceInput,
    pub left_out: Vec<LeftOut>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("no host aggregate named (or with id) {0:?}")]
    UnknownAggregate(String),
    #[error(transparent)]
    OpenStack(#[from] OpenStackError),
}

impl CloudSnapshot {
    /// Reads the cloud with bulk calls (see the module header).
    pub async fn read(client: &OpenStackClient) -> Result<Self, OpenStackError> {
        Ok(Self {
            aggregates: client.aggregates().await?,
            services: client.compute_services().await?,
            hypervisors: client.hypervisors().await?,
            capacities: client.capacities().await?,
            servers: client.servers(&ServerFilter { all_tenants: true, ..ServerFilter::default() }).await?,
            groups: client.server_groups().await?,
        })
    }

    /// Only what a host's figures need (aggregates, compute services, hypervisors, Placement
    /// capacities; no servers or groups): what the executor re-reads before each migration.
    pub async fn read_hosts(client: &OpenStackClient) -> Result<Self, OpenStackError> {
        Ok(Self {
            aggregates: client.aggregates().await?,
            services: client.compute_services().await?,
            hypervisors: client.hypervisors().await?,
            capacities: client.capacities().await?,
            servers: Vec::new(),
            groups: Vec::new(),
        })
    }

    /// The aggregates to balance: the one named (or with that id), or every aggregate that
    /// has hosts, by name.
    pub fn aggregates_named(&self, name: Option<&str>) -> Result<Vec<&Aggregate>, GatherError> {
        match name {
            Some(name) => self
                .aggregates
                .iter()
                .find(|aggregate| aggregate.name == name || aggregate.id.to_string() == name)
                .map(|aggregate| vec![aggregate])
                .ok_or_else(|| GatherError::UnknownAggregate(name.to_owned())),
            None => {
                let mut all: Vec<&Aggregate> =
                    self.aggregates.iter().filter(|aggregate| !aggregate.hosts.is_empty()).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(all)
            }
        }
    }

    /// The planner's input for `aggregate`. A host is left out when it is on the deny list,
    /// its nova-compute is not up, enabled and not forced down, or Placement has no memory
    /// inventory for it. A server stays where it is (`pinned`) unless it is ACTIVE with no
    /// task in progress, has a known flavor and no `aos:balancing=deny` metadata.
    pub fn input_for(&self, aggregate: &Aggregate, deny_hosts: &BTreeSet<String>) -> Gathered {
        let services: BTreeMap<&str, &ComputeService> =
            self.services.iter().map(|service| (service.host.as_str(), service)).collect();
        let hypervisor_of: BTreeMap<&str, &Hypervisor> =
            self.hypervisors.iter().map(|hypervisor| (hypervisor.service_host.as_str(), hypervisor)).collect();
        let by_uuid: BTreeMap<&str, &ProviderCapacity> =
            self.capacities.iter().map(|capacity| (capacity.uuid.as_str(), capacity)).collect();
        let by_name: BTreeMap<&str, &ProviderCapacity> =
            self.capacities.iter().map(|capacity| (capacity.name.as_str(), capacity)).collect();

        let mut hosts = Vec::new();
        let mut left_out = Vec::new();
        let mut aggregate_hosts = aggregate.hosts.clone();
        aggregate_hosts.sort();
        aggregate_hosts.dedup();
        for name in aggregate_hosts {
            let mut leave = |reason: String| left_out.push(LeftOut { host: name.clone(), reason });
            if deny_hosts.contains(&name) {
                leave("in [balancing] deny_hosts".into());
                continue;
            }
            let Some(service) = services.get(name.as_str()) else {
                leave("no nova-compute service".into());
                continue;
            };
            if service.forced_down || service.state != ServiceState::Up || service.status != ServiceStatus::Enabled {
                leave(format!(
                    "nova-compute is {:?}, {:?}{}",
                    service.state,
                    service.status,
                    if service.forced_down { ", forced down" } else { "" }
                ));
                continue;
            }
            // The compute node's provider has the hypervisor's id as uuid; by name for
            // drivers whose hypervisor_hostname is the host name.
            let provider = hypervisor_of
                .get(name.as_str())
                .and_then(|hypervisor| {
                    by_uuid.get(hypervisor.id.as_str()).or_else(|| by_name.get(hypervisor.hypervisor_hostname.as_str()))
                })
                .or_else(|| by_name.get(name.as_str()));
            let Some(provider) = provider else {
                leave("no resource provider in Placement".into());
                continue;
            };
            let class = |class: &str| {
                provider
                    .resources
                    .get(class)
                    .map(|resource| Capacity { capacity: resource.capacity, used: resource.used })
            };
            let Some(ram_mb) = class("MEMORY_MB").filter(|ram| ram.capacity > 0) else {
                leave("no MEMORY_MB inventory in Placement".into());
                continue;
            };
            let vcpus = class("VCPU").unwrap_or(Capacity { capacity: 0, used: 0 });
            hosts.push(Host { name, ram_mb, vcpus });
        }

        let included: BTreeSet<&str> = hosts.iter().map(|host| host.name.as_str()).collect();
        let mut servers: Vec<Server> = self
            .servers
            .iter()
            .filter(|server| server.host.as_deref().is_some_and(|host| included.contains(host)))
            .map(|server| Server {
                id: server.id.clone(),
                name: server.name.clone(),
                host: server.host.clone().unwrap_or_default(),
                ram_mb: server.flavor.as_ref().map_or(0, |flavor| flavor.ram_mb),
                vcpus: server.flavor.as_ref().map_or(0, |flavor| flavor.vcpus),
                pinned: pin_reason(server),
            })
            .collect();
        servers.sort_by(|a, b| a.id.cmp(&b.id));

        let groups = self
            .groups
            .iter()
            .filter_map(|group| {
                let policy = GroupPolicy::parse(&group.policy)?;
                let max_server_per_host = group
                    .rules
                    .get("max_server_per_host")
                    .and_then(|value| value.as_u64().or_else(|| value.as_str()?.parse().ok()))
                    .and_then(|value| u32::try_from(value).ok())
                    .unwrap_or(1);
                Some(ServerGroup {
                    id: group.id.clone(),
                    name: group.name.clone(),
                    policy,
                    members: group.members.clone(),
                    max_server_per_host,
                })
            })
            .collect();
        Gathered { input: BalanceInput { aggregate: aggregate.name.clone(), hosts, servers, groups }, left_out }
    }
}

/// Why a server must stay, or `None` when balancing may live-migrate it.
fn pin_reason(server: &NovaServer) -> Option<String> {
    if server.metadata.get(BALANCING_METADATA_KEY).is_some_and(|value| value == BALANCING_DENY) {
        return Some(format!("metadata {BALANCING_METADATA_KEY}={BALANCING_DENY}"));
    }
    if server.status != "ACTIVE" {
        return Some(format!("status {}", server.status));
    }
    if let Some(task) = &server.task_state {
        return Some(format!("task {task} in progress"));
    }
    if server.flavor.is_none() {
        return Some("flavor unknown".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aos_openstack::{PowerState, ResourceCapacity, ServerFlavor};

    use super::*;

    fn service(host: &str, state: ServiceState, status: ServiceStatus, forced_down: bool) -> ComputeService {
        ComputeService {
            id: format!("svc-{host}"),
            binary: "nova-compute".into(),
            host: host.into(),
            zone: "nova".into(),
            status,
            state,
            forced_down,
            disabled_reason: None,
            updated_at: None,
        }
    }

    fn hypervisor(host: &str) -> Hypervisor {
        Hypervisor {
            id: format!("rp-{host}"),
            hypervisor_hostname: format!("{host}.example"),
            hypervisor_type: Some("fake".into()),
            host_ip: None,
            state: ServiceState::Up,
            status: ServiceStatus::Enabled,
            service_host: host.into(),
            service_id: format!("svc-{host}"),
        }
    }

    fn capacity(host: &str, ram: (u64, u64), vcpus: Option<(u64, u64)>) -> ProviderCapacity {
        let mut resources =
            BTreeMap::from([("MEMORY_MB".to_owned(), ResourceCapacity { capacity: ram.0, used: ram.1 })]);
        if let Some((capacity, used)) = vcpus {
            resources.insert("VCPU".into(), ResourceCapacity { capacity, used });
        }
        ProviderCapacity { uuid: format!("rp-{host}"), name: format!("{host}.example"), resources }
    }

    fn server(id: &str, host: &str, status: &str) -> NovaServer {
        NovaServer {
            id: id.into(),
            name: id.into(),
            status: status.into(),
            vm_state: None,
            task_state: None,
            power_state: PowerState::Running,
            host: Some(host.into()),
            hypervisor_hostname: None,
            availability_zone: None,
            flavor: Some(ServerFlavor {
                original_name: Some("m1.small".into()),
                ram_mb: 2048,
                vcpus: 2,
                disk_gb: 1,
                ephemeral_gb: 0,
                swap_mb: 0,
                extra_specs: BTreeMap::new(),
            }),
            metadata: BTreeMap::new(),
            server_groups: None,
            tenant_id: None,
            user_id: None,
            created: None,
            updated: None,
        }
    }

    fn snapshot() -> CloudSnapshot {
        let hosts = ["a", "b", "c", "d", "e", "f"];
        let mut servers = vec![server("s1", "a", "ACTIVE"), server("s2", "a", "SHUTOFF"), server("s3", "b", "ACTIVE")];
        servers[2].metadata.insert(BALANCING_METADATA_KEY.into(), BALANCING_DENY.into());
        servers.push(server("s4", "b", "ACTIVE"));
        servers[3].task_state = Some("migrating".into());
        servers.push(server("elsewhere", "z", "ACTIVE"));
        servers.push(server("on-denied", "c", "ACTIVE"));
        CloudSnapshot {
            aggregates: vec![Aggregate {
                id: 7,
                uuid: None,
                name: "agg".into(),
                availability_zone: None,
                hosts: hosts.iter().map(|h| (*h).to_owned()).chain(["gone".to_owned()]).collect(),
                metadata: BTreeMap::new(),
            }],
            services: vec![
                service("a", ServiceState::Up, ServiceStatus::Enabled, false),
                service("b", ServiceState::Up, ServiceStatus::Enabled, false),
                service("c", ServiceState::Up, ServiceStatus::Enabled, false),
                service("d", ServiceState::Down, ServiceStatus::Enabled, false),
                service("e", ServiceState::Up, ServiceStatus::Disabled, false),
                service("f", ServiceState::Up, ServiceStatus::Enabled, true),
            ],
            hypervisors: hosts.iter().map(|h| hypervisor(h)).collect(),
            capacities: vec![
                capacity("a", (8192, 4096), Some((32, 4))),
                capacity("b", (8192, 4096), None),
                capacity("c", (8192, 0), Some((32, 0))),
            ],
            servers,
            groups: vec![NovaServerGroup {
                id: "g".into(),
                name: "g".into(),
                policy: "anti-affinity".into(),
                rules: BTreeMap::from([("max_server_per_host".to_owned(), serde_json::json!(2))]),
                members: vec!["s1".into(), "s3".into()],
                project_id: None,
                user_id: None,
            }],
        }
    }

    #[test]
    fn hosts_not_up_enabled_and_in_placement_are_left_out_with_the_reason() {
        let snapshot = snapshot();
        let aggregate = snapshot.aggregates_named(Some("agg")).unwrap()[0];
        let gathered = snapshot.input_for(aggregate, &BTreeSet::from(["c".to_owned()]));
        let hosts: Vec<&str> = gathered.input.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(hosts, ["a", "b"]);
        let left_out: BTreeMap<&str, &str> =
            gathered.left_out.iter().map(|l| (l.host.as_str(), l.reason.as_str())).collect();
        assert_eq!(left_out["c"], "in [balancing] deny_hosts");
        assert!(left_out["d"].contains("Down"), "{left_out:?}");
        assert!(left_out["e"].contains("Disabled"), "{left_out:?}");
        assert!(left_out["f"].contains("forced down"), "{left_out:?}");
        assert_eq!(left_out["gone"], "no nova-compute service");
        // The provider is found by the hypervisor's id, its figures are Placement's.
        assert_eq!(gathered.input.hosts[0].ram_mb, Capacity { capacity: 8192, used: 4096 });
        assert_eq!(gathered.input.hosts[1].vcpus, Capacity { capacity: 0, used: 0 });
    }

    #[test]
    fn only_active_idle_servers_without_deny_metadata_are_movable() {
        let snapshot = snapshot();
        let aggregate = &snapshot.aggregates[0];
        let gathered = snapshot.input_for(aggregate, &BTreeSet::from(["c".to_owned()]));
        let pinned: BTreeMap<&str, Option<&str>> =
            gathered.input.servers.iter().map(|s| (s.id.as_str(), s.pinned.as_deref())).collect();
        assert_eq!(pinned.len(), 4, "servers of other hosts are not part of the input: {pinned:?}");
        assert_eq!(pinned["s1"], None);
        assert_eq!(pinned["s2"], Some("status SHUTOFF"));
        assert_eq!(pinned["s3"], Some("metadata aos:balancing=deny"));
        assert_eq!(pinned["s4"], Some("task migrating in progress"));
        let group = &gathered.input.groups[0];
        assert_eq!((group.policy, group.max_server_per_host), (GroupPolicy::AntiAffinity, 2));
    }

    #[test]
    fn an_unknown_aggregate_is_named_and_all_means_every_aggregate_with_hosts() {
        let snapshot = snapshot();
        let error = snapshot.aggregates_named(Some("nope")).unwrap_err();
        assert!(error.to_string().contains("\"nope\""), "{error}");
        assert_eq!(snapshot.aggregates_named(Some("7")).unwrap()[0].name, "agg");
        assert_eq!(snapshot.aggregates_named(None).unwrap().len(), 1);
    }
}
