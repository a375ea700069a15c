//! Nova: compute services, hypervisors, servers, migrations, aggregates, server groups,
//! flavors — the types we read and the calls we make, each at the microversion named in
//! [`crate::microversion`].
//!
//! Lists are bulk calls that page with `limit`/`marker` (or `offset` for server groups) until
//! Nova says there is no next page, so the number of calls depends on the number of
//! records, never on the number of hosts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::client::{ApiRequest, OpenStackClient, Service, path_segment as segment};
use crate::error::OpenStackError;
use crate::microversion;
use crate::time::{format_timestamp, optional_timestamp};

/// Records asked for per page. Nova caps it at its `[api] max_limit` (default 1000) and then
/// still returns a `next` link, which we follow.
const PAGE_SIZE: usize = 1000;

/// Whether the scheduler may place servers on a compute service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    Enabled,
    Disabled,
    #[serde(other)]
    Unknown,
}

/// Whether Nova hears the service's heartbeat (or the service is forced down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Up,
    Down,
    #[serde(other)]
    Unknown,
}

/// A nova-compute service (`GET /os-services?binary=nova-compute`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ComputeService {
    /// UUID; the `service_id` of [`OpenStackClient::set_forced_down`] and friends.
    pub id: String,
    pub binary: String,
    pub host: String,
    /// Availability zone.
    pub zone: String,
    pub status: ServiceStatus,
    pub state: ServiceState,
    #[serde(default)]
    pub forced_down: bool,
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// Last heartbeat recorded by Nova (UTC).
    #[serde(default, deserialize_with = "optional_timestamp")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A hypervisor (compute node) without resource figures: capacity comes from Placement,
/// where the resource provider's uuid is the hypervisor's `id` and its name the
/// `hypervisor_hostname`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypervisor {
    /// Compute node UUID (= Placement resource provider uuid).
    pub id: String,
    pub hypervisor_hostname: String,
    pub hypervisor_type: Option<String>,
    pub host_ip: Option<String>,
    pub state: ServiceState,
    pub status: ServiceStatus,
    /// `service.host`: the nova-compute host that owns this node.
    pub service_host: String,
    /// `service.id`: that nova-compute service's UUID.
    pub service_id: String,
}

/// Nova's `OS-EXT-STS:power_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    NoState,
    Running,
    Paused,
    Shutdown,
    Crashed,
    Suspended,
    Other(i64),
}

impl PowerState {
    fn from_code(code: Option<i64>) -> Self {
        match code {
            None | Some(0) => Self::NoState,
            Some(1) => Self::Running,
            Some(3) => Self::Paused,
            Some(4) => Self::Shutdown,
            Some(6) => Self::Crashed,
            Some(7) => Self::Suspended,
            Some(other) => Self::Other(other),
        }
    }
}

/// The flavor a server was built with, as embedded in the server (2.47+).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerFlavor {
    #[serde(default)]
    pub original_name: Option<String>,
    #[serde(rename = "ram", deserialize_with = "lenient_u64")]
    pub ram_mb: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub vcpus: u64,
    #[serde(rename = "disk", default, deserialize_with = "lenient_u64")]
    pub disk_gb: u64,
    #[serde(rename = "ephemeral", default, deserialize_with = "lenient_u64")]
    pub ephemeral_gb: u64,
    #[serde(rename = "swap", default, deserialize_with = "lenient_u64")]
    pub swap_mb: u64,
    #[serde(default, deserialize_with = "string_map")]
    pub extra_specs: BTreeMap<String, String>,
}

/// A server as the HA suite sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub id: String,
    pub name: String,
    /// API status: ACTIVE, SHUTOFF, ERROR, MIGRATING, REBUILD, ... (`UNKNOWN` for a server in
    /// an unreachable cell).
    pub status: String,
    /// `OS-EXT-STS:vm_state`: active, stopped, error, ...
    pub vm_state: Option<String>,
    /// `OS-EXT-STS:task_state`: `None` when no operation is in progress.
    pub task_state: Option<String>,
    pub power_state: PowerState,
    /// `OS-EXT-SRV-ATTR:host`: the nova-compute host it is on (admin only).
    pub host: Option<String>,
    /// `OS-EXT-SRV-ATTR:hypervisor_hostname`.
    pub hypervisor_hostname: Option<String>,
    /// `OS-EXT-AZ:availability_zone`.
    pub availability_zone: Option<String>,
    pub flavor: Option<ServerFlavor>,
    /// User metadata (e.g. the evacuation priority).
    pub metadata: BTreeMap<String, String>,
    /// Server groups the server belongs to. Nova reports them only when one server is shown
    /// ([`OpenStackClient::server`]): `None` in lists, where
    /// [`OpenStackClient::server_groups`] gives every group's members in one call instead.
    pub server_groups: Option<Vec<String>>,
    pub tenant_id: Option<String>,
    pub user_id: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
}

/// Which servers [`OpenStackClient::servers`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFilter {
    /// Only servers on this nova-compute host.
    pub host: Option<String>,
    /// Servers of every project, not only the token's (admin).
    pub all_tenants: bool,
    /// Only servers changed (status, task, host, …) at or after this time; Nova then also
    /// lists servers deleted since, with status `DELETED`.
    pub changes_since: Option<DateTime<Utc>>,
}

/// What [`OpenStackClient::create_server`] boots. Used by tests and benchmarks; the HA suite
/// itself never creates servers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewServer {
    pub name: String,
    pub image_id: String,
    pub flavor_id: String,
    /// Boot on this host (admin; microversion 2.74).
    pub host: Option<String>,
    /// Scheduler hint `group`: the server group to join.
    pub server_group: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// `migration_type` of a migration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationType {
    Evacuation,
    LiveMigration,
    /// Cold migration.
    Migration,
    Resize,
    Other(String),
}

impl MigrationType {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Evacuation => "evacuation",
            Self::LiveMigration => "live-migration",
            Self::Migration => "migration",
            Self::Resize => "resize",
            Self::Other(other) => other,
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "evacuation" => Self::Evacuation,
            "live-migration" => Self::LiveMigration,
            "migration" => Self::Migration,
            "resize" => Self::Resize,
            other => Self::Other(other.to_string()),
        }
    }
}

/// A migration record (`GET /os-migrations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub id: i64,
    pub uuid: Option<String>,
    pub instance_uuid: String,
    pub migration_type: MigrationType,
    /// queued, preparing, running, post-migrating, completed, done, accepted, failed, error ...
    pub status: String,
    pub source_compute: Option<String>,
    pub dest_compute: Option<String>,
    pub source_node: Option<String>,
    pub dest_node: Option<String>,
    pub dest_host: Option<String>,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Which migrations [`OpenStackClient::migrations`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationFilter {
    /// Migrations from or to this host.
    pub host: Option<String>,
    pub instance_uuid: Option<String>,
    pub migration_type: Option<MigrationType>,
    /// Only migrations updated at or after this time.
    pub changes_since: Option<DateTime<Utc>>,
}

/// A host aggregate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Aggregate {
    /// Integer id used in the aggregate URLs.
    pub id: i64,
    #[serde(default)]
    pub uuid: Option<String>,
    pub name: String,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub hosts: Vec<String>,
    #[serde(default, deserialize_with = "string_map")]
    pub metadata: BTreeMap<String, String>,
}

/// A server group and its members (`GET /os-server-groups?all_projects=True`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    /// affinity, anti-affinity, soft-affinity, soft-anti-affinity.
    pub policy: String,
    /// Policy rules, e.g. `max_server_per_host` for anti-affinity.
    #[serde(default)]
    pub rules: BTreeMap<String, Value>,
    /// Server ids.
    #[serde(default, deserialize_with = "null_as_default")]
    pub members: Vec<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A flavor (`GET /flavors/detail`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    #[serde(rename = "ram", deserialize_with = "lenient_u64")]
    pub ram_mb: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub vcpus: u64,
    #[serde(rename = "disk", default, deserialize_with = "lenient_u64")]
    pub disk_gb: u64,
}

impl OpenStackClient {
    /// Every nova-compute service with its state (one call; microversion
    /// [`microversion::COMPUTE_SERVICES`]).
    pub async fn compute_services(&self) -> Result<Vec<ComputeService>, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            services: Vec<ComputeService>,
        }
        let request = ApiRequest::new(Service::Compute, Method::GET, "/os-services")
            .microversion(microversion::COMPUTE_SERVICES)
            .query("binary", "nova-compute");
        Ok(self.send_json::<Answer>(&request).await?.services)
    }

    /// Sets or clears `forced_down` on a compute service (`PUT /os-services/{id}`). Nova
    /// refuses to clear it while `done` evacuation migrations remain on the host
    /// ([`OpenStackError::ServiceInUse`]): restart the compute first.
    pub async fn set_forced_down(&self, service_id: &str, forced_down: bool) -> Result<ComputeService, OpenStackError> {
        self.update_service(service_id, json!({ "forced_down": forced_down })).await
    }

    /// Disables scheduling to a compute service, recording why.
    pub async fn disable_service(&self, service_id: &str, reason: &str) -> Result<ComputeService, OpenStackError> {
        self.update_service(service_id, json!({ "status": "disabled", "disabled_reason": reason })).await
    }

    /// Enables scheduling to a compute service again (clears the disabled reason).
    pub async fn enable_service(&self, service_id: &str) -> Result<ComputeService, OpenStackError> {
        self.update_service(service_id, json!({ "status": "enabled" })).await
    }

    /// Deletes a compute service record (and with it its compute node and resource
    /// provider). [`OpenStackError::ServiceInUse`] while the host has instances or migrations
    /// in progress. For decommissioning a host, and for tests that add computes of their own.
    pub async fn delete_compute_service(&self, service_id: &str) -> Result<(), OpenStackError> {
        let request =
            ApiRequest::new(Service::Compute, Method::DELETE, format!("/os-services/{}", segment(service_id)))
                .microversion(microversion::COMPUTE_SERVICES);
        self.send(&request).await.map(drop)
    }

    async fn update_service(&self, service_id: &str, body: Value) -> Result<ComputeService, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            service: ComputeService,
        }
        let request = ApiRequest::new(Service::Compute, Method::PUT, format!("/os-services/{}", segment(service_id)))
            .microversion(microversion::COMPUTE_SERVICES)
            .json(body);
        Ok(self.send_json::<Answer>(&request).await?.service)
    }

    /// Every hypervisor (paged; microversion [`microversion::HYPERVISORS`]).
    pub async fn hypervisors(&self) -> Result<Vec<Hypervisor>, OpenStackError> {
        #[derive(Deserialize)]
        struct RawService {
            id: String,
            host: String,
        }
        #[derive(Deserialize)]
        struct RawHypervisor {
            id: String,
            hypervisor_hostname: String,
            #[serde(default)]
            hypervisor_type: Option<String>,
            #[serde(default)]
            host_ip: Option<String>,
            state: ServiceState,
            status: ServiceStatus,
            service: RawService,
        }
        let raw: Vec<RawHypervisor> = self
            .paged(
                ApiRequest::new(Service::Compute, Method::GET, "/os-hypervisors/detail")
                    .microversion(microversion::HYPERVISORS),
                "hypervisors",
                |hypervisor: &RawHypervisor| hypervisor.id.clone(),
            )
            .await?;
        Ok(raw
            .into_iter()
            .map(|raw| Hypervisor {
                id: raw.id,
                hypervisor_hostname: raw.hypervisor_hostname,
                hypervisor_type: raw.hypervisor_type,
                host_ip: raw.host_ip,
                state: raw.state,
                status: raw.status,
                service_host: raw.service.host,
                service_id: raw.service.id,
            })
            .collect())
    }

    /// Servers matching `filter`, with details (paged; microversion [`microversion::SERVERS`]).
    pub async fn servers(&self, filter: &ServerFilter) -> Result<Vec<Server>, OpenStackError> {
        let mut request =
            ApiRequest::new(Service::Compute, Method::GET, "/servers/detail").microversion(microversion::SERVERS);
        if filter.all_tenants {
            request = request.query("all_tenants", "1");
        }
        if let Some(host) = &filter.host {
            request = request.query("host", host.clone());
        }
        if let Some(since) = &filter.changes_since {
            request = request.query("changes-since", format_timestamp(since));
        }
        let raw: Vec<RawServer> = self.paged(request, "servers", |server: &RawServer| server.id.clone()).await?;
        Ok(raw.into_iter().map(Server::from).collect())
    }

    /// One server, including its server groups.
    pub async fn server(&self, server_id: &str) -> Result<Server, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            server: RawServer,
        }
        let request = ApiRequest::new(Service::Compute, Method::GET, format!("/servers/{}", segment(server_id)))
            .microversion(microversion::SERVERS);
        Ok(self.send_json::<Answer>(&request).await?.server.into())
    }

    /// Boots a server without networks (`"networks": "none"`) and returns its id.
    pub async fn create_server(&self, server: &NewServer) -> Result<String, OpenStackError> {
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            server: Created,
        }
        let mut body = json!({
            "server": {
                "name": server.name,
                "imageRef": server.image_id,
                "flavorRef": server.flavor_id,
                "networks": "none",
                "metadata": server.metadata,
            }
        });
        if let Some(host) = &server.host {
            body["server"]["host"] = json!(host);
        }
        if let Some(group) = &server.server_group {
            body["os:scheduler_hints"] = json!({ "group": group });
        }
        let request =
            ApiRequest::new(Service::Compute, Method::POST, "/servers").microversion(microversion::SERVERS).json(body);
        Ok(self.send_json::<Answer>(&request).await?.server.id)
    }

    /// Deletes a server (asynchronous in Nova: it disappears from lists shortly after).
    pub async fn delete_server(&self, server_id: &str) -> Result<(), OpenStackError> {
        let request = ApiRequest::new(Service::Compute, Method::DELETE, format!("/servers/{}", segment(server_id)))
            .microversion(microversion::SERVERS);
        self.send(&request).await.map(drop)
    }

    /// Rebuilds a server of a failed host elsewhere (`evacuate` action at microversion
    /// [`microversion::SERVERS`], 2.94: the server keeps its pre-failure state). Without a
    /// target the scheduler picks the host. Nova answers before the evacuation is done:
    /// poll the server (or its `evacuation` migration) for the outcome — and wait for its
    /// `host` to change, not only for ACTIVE: Nova 34 shows the server `ACTIVE`, no task, on
    /// the *old* host for a moment between `rebuilding` and the switch (observed in
    /// `tests/cloud.rs`). Not retried on 5xx.
    pub async fn evacuate(&self, server_id: &str, target_host: Option<&str>) -> Result<(), OpenStackError> {
        let evacuate = match target_host {
            Some(host) => json!({ "host": host }),
            None => json!({}),
        };
        self.server_action(server_id, json!({ "evacuate": evacuate })).await
    }

    /// Live-migrates a server (`os-migrateLive` with `block_migration: "auto"`). Without a
    /// target the scheduler picks the host. Asynchronous like [`Self::evacuate`].
    pub async fn live_migrate(&self, server_id: &str, target_host: Option<&str>) -> Result<(), OpenStackError> {
        self.server_action(server_id, json!({ "os-migrateLive": { "host": target_host, "block_migration": "auto" } }))
            .await
    }

    /// Stops (powers off) a server (`os-stop`).
    pub async fn stop_server(&self, server_id: &str) -> Result<(), OpenStackError> {
        self.server_action(server_id, json!({ "os-stop": null })).await
    }

    /// Starts a stopped server (`os-start`).
    pub async fn start_server(&self, server_id: &str) -> Result<(), OpenStackError> {
        self.server_action(server_id, json!({ "os-start": null })).await
    }

    async fn server_action(&self, server_id: &str, body: Value) -> Result<(), OpenStackError> {
        let request =
            ApiRequest::new(Service::Compute, Method::POST, format!("/servers/{}/action", segment(server_id)))
                .microversion(microversion::SERVERS)
                .json(body);
        self.send(&request).await.map(drop)
    }

    /// Migration records matching `filter` (paged; microversion [`microversion::MIGRATIONS`]).
    pub async fn migrations(&self, filter: &MigrationFilter) -> Result<Vec<Migration>, OpenStackError> {
        let mut request =
            ApiRequest::new(Service::Compute, Method::GET, "/os-migrations").microversion(microversion::MIGRATIONS);
        if let Some(host) = &filter.host {
            request = request.query("host", host.clone());
        }
        if let Some(instance_uuid) = &filter.instance_uuid {
            request = request.query("instance_uuid", instance_uuid.clone());
        }
        if let Some(migration_type) = &filter.migration_type {
            request = request.query("migration_type", migration_type.as_str().to_string());
        }
        if let Some(since) = &filter.changes_since {
            request = request.query("changes-since", format_timestamp(since));
        }
        let raw: Vec<RawMigration> = self
            .paged(request, "migrations", |migration: &RawMigration| migration.uuid.clone().unwrap_or_default())
            .await?;
        Ok(raw.into_iter().map(Migration::from).collect())
    }

    /// Every host aggregate with its hosts and metadata (one call).
    pub async fn aggregates(&self) -> Result<Vec<Aggregate>, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            aggregates: Vec<Aggregate>,
        }
        let request =
            ApiRequest::new(Service::Compute, Method::GET, "/os-aggregates").microversion(microversion::AGGREGATES);
        Ok(self.send_json::<Answer>(&request).await?.aggregates)
    }

    /// Creates a host aggregate (optionally exposed as an availability zone).
    pub async fn create_aggregate(
        &self,
        name: &str,
        availability_zone: Option<&str>,
    ) -> Result<Aggregate, OpenStackError> {
        let request = ApiRequest::new(Service::Compute, Method::POST, "/os-aggregates")
            .microversion(microversion::AGGREGATES)
            .json(json!({ "aggregate": { "name": name, "availability_zone": availability_zone } }));
        self.aggregate_answer(&request).await
    }

    /// Deletes a host aggregate (Nova refuses while it still has hosts).
    pub async fn delete_aggregate(&self, aggregate_id: i64) -> Result<(), OpenStackError> {
        let request = ApiRequest::new(Service::Compute, Method::DELETE, format!("/os-aggregates/{aggregate_id}"))
            .microversion(microversion::AGGREGATES);
        self.send(&request).await.map(drop)
    }

    /// Adds a host to an aggregate; [`OpenStackError::Conflict`] when it is already there.
    pub async fn aggregate_add_host(&self, aggregate_id: i64, host: &str) -> Result<Aggregate, OpenStackError> {
        self.aggregate_action(aggregate_id, json!({ "add_host": { "host": host } })).await
    }

    /// Removes a host from an aggregate; [`OpenStackError::NotFound`] when it is not there.
    pub async fn aggregate_remove_host(&self, aggregate_id: i64, host: &str) -> Result<Aggregate, OpenStackError> {
        self.aggregate_action(aggregate_id, json!({ "remove_host": { "host": host } })).await
    }

    async fn aggregate_action(&self, aggregate_id: i64, body: Value) -> Result<Aggregate, OpenStackError> {
        let request = ApiRequest::new(Service::Compute, Method::POST, format!("/os-aggregates/{aggregate_id}/action"))
            .microversion(microversion::AGGREGATES)
            .json(body);
        self.aggregate_answer(&request).await
    }

    async fn aggregate_answer(&self, request: &ApiRequest) -> Result<Aggregate, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            aggregate: Aggregate,
        }
        Ok(self.send_json::<Answer>(request).await?.aggregate)
    }

    /// Every server group of every project with its members (paged by offset).
    pub async fn server_groups(&self) -> Result<Vec<ServerGroup>, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            server_groups: Vec<ServerGroup>,
        }
        // This API pages by offset and returns no links: read until a page comes back empty
        // (a short page does not prove the end, Nova's max_limit may be below PAGE_SIZE).
        let mut groups = Vec::new();
        loop {
            let request = ApiRequest::new(Service::Compute, Method::GET, "/os-server-groups")
                .microversion(microversion::SERVER_GROUPS)
                .query("all_projects", "True")
                .query("limit", PAGE_SIZE.to_string())
                .query("offset", groups.len().to_string());
            let page = self.send_json::<Answer>(&request).await?.server_groups;
            if page.is_empty() {
                return Ok(groups);
            }
            groups.extend(page);
        }
    }

    /// Creates a server group with `policy` (affinity, anti-affinity, soft-...).
    pub async fn create_server_group(&self, name: &str, policy: &str) -> Result<ServerGroup, OpenStackError> {
        #[derive(Deserialize)]
        struct Answer {
            server_group: ServerGroup,
        }
        let request = ApiRequest::new(Service::Compute, Method::POST, "/os-server-groups")
            .microversion(microversion::SERVER_GROUPS)
            .json(json!({ "server_group": { "name": name, "policy": policy } }));
        Ok(self.send_json::<Answer>(&request).await?.server_group)
    }

    /// Deletes a server group.
    pub async fn delete_server_group(&self, group_id: &str) -> Result<(), OpenStackError> {
        let request =
            ApiRequest::new(Service::Compute, Method::DELETE, format!("/os-server-groups/{}", segment(group_id)))
                .microversion(microversion::SERVER_GROUPS);
        self.send(&request).await.map(drop)
    }

    /// Every flavor visible to the project (paged).
    pub async fn flavors(&self) -> Result<Vec<Flavor>, OpenStackError> {
        self.paged(
            ApiRequest::new(Service::Compute, Method::GET, "/flavors/detail").microversion(microversion::FLAVORS),
            "flavors",
            |flavor: &Flavor| flavor.id.clone(),
        )
        .await
    }

    /// Reads every page of a `limit`/`marker` list: asks for `PAGE_SIZE` records and follows
    /// while Nova returns a `next` link in `<key>_links`, with the last record's id as marker.
    async fn paged<T: serde::de::DeserializeOwned>(
        &self,
        request: ApiRequest,
        key: &str,
        marker_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, OpenStackError> {
        let mut items: Vec<T> = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut page_request = ApiRequest::new(request.service, request.method.clone(), request.path.clone());
            page_request.microversion = request.microversion;
            page_request.query = request.query.clone();
            page_request = page_request.query("limit", PAGE_SIZE.to_string());
            if let Some(marker) = &marker {
                page_request = page_request.query("marker", marker.clone());
            }
            let answer = self.send(&page_request).await?;
            let mut page: serde_json::Map<String, Value> = answer.json()?;
            let records = page.remove(key).unwrap_or(Value::Array(Vec::new()));
            let records: Vec<T> = serde_json::from_value(records).map_err(|error| OpenStackError::InvalidResponse {
                call: page_request.describe(),
                message: format!("cannot decode '{key}': {error}"),
            })?;
            let has_next = page
                .get(&format!("{key}_links"))
                .and_then(Value::as_array)
                .is_some_and(|links| links.iter().any(|link| link.get("rel").and_then(Value::as_str) == Some("next")));
            let last = records.last().map(&marker_of);
            items.extend(records);
            match last {
                Some(last) if has_next && !last.is_empty() && marker.as_deref() != Some(last.as_str()) => {
                    marker = Some(last)
                }
                _ => return Ok(items),
            }
        }
    }
}

#[derive(Deserialize)]
struct RawServer {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(rename = "OS-EXT-STS:vm_state", default)]
    vm_state: Option<String>,
    #[serde(rename = "OS-EXT-STS:task_state", default)]
    task_state: Option<String>,
    #[serde(rename = "OS-EXT-STS:power_state", default)]
    power_state: Option<i64>,
    #[serde(rename = "OS-EXT-SRV-ATTR:host", default)]
    host: Option<String>,
    #[serde(rename = "OS-EXT-SRV-ATTR:hypervisor_hostname", default)]
    hypervisor_hostname: Option<String>,
    #[serde(rename = "OS-EXT-AZ:availability_zone", default)]
    availability_zone: Option<String>,
    #[serde(default)]
    flavor: Option<ServerFlavor>,
    #[serde(default, deserialize_with = "string_map")]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    server_groups: Option<Vec<String>>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "optional_timestamp")]
    created: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "optional_timestamp")]
    updated: Option<DateTime<Utc>>,
}

impl From<RawServer> for Server {
    fn from(raw: RawServer) -> Self {
        Self {
            id: raw.id,
            name: raw.name,
            status: raw.status,
            vm_state: raw.vm_state,
            task_state: raw.task_state,
            power_state: PowerState::from_code(raw.power_state),
            host: raw.host,
            hypervisor_hostname: raw.hypervisor_hostname,
            availability_zone: raw.availability_zone,
            flavor: raw.flavor,
            metadata: raw.metadata,
            server_groups: raw.server_groups,
            tenant_id: raw.tenant_id,
            user_id: raw.user_id,
            created: raw.created,
            updated: raw.updated,
        }
    }
}

#[derive(Deserialize)]
struct RawMigration {
    id: i64,
    #[serde(default)]
    uuid: Option<String>,
    instance_uuid: String,
    #[serde(default)]
    migration_type: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    source_compute: Option<String>,
    #[serde(default)]
    dest_compute: Option<String>,
    #[serde(default)]
    source_node: Option<String>,
    #[serde(default)]
    dest_node: Option<String>,
    #[serde(default)]
    dest_host: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "optional_timestamp")]
    created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "optional_timestamp")]
    updated_at: Option<DateTime<Utc>>,
}

impl From<RawMigration> for Migration {
    fn from(raw: RawMigration) -> Self {
        Self {
            id: raw.id,
            uuid: raw.uuid,
            instance_uuid: raw.instance_uuid,
            migration_type: MigrationType::parse(raw.migration_type.as_deref().unwrap_or("migration")),
            status: raw.status,
            source_compute: raw.source_compute,
            dest_compute: raw.dest_compute,
            source_node: raw.source_node,
            dest_node: raw.dest_node,
            dest_host: raw.dest_host,
            project_id: raw.project_id,
            user_id: raw.user_id,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
        }
    }
}

/// A count Nova may send as a number, a numeric string, `""` (swap before 2.75) or null.
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(number) => {
            number.as_u64().or_else(|| number.as_f64().map(|float| float.max(0.0) as u64)).unwrap_or(0)
        }
        Value::String(text) => text.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

/// A string map whose values Nova may send as non-strings or null (null entries dropped).
pub(crate) fn string_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .filter_map(|(key, value)| match value {
            Value::Null => None,
            Value::String(text) => Some((key, text)),
            other => Some((key, other.to_string())),
        })
        .collect())
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Services {
        services: Vec<ComputeService>,
    }

    #[test]
    fn compute_services_are_read_from_novas_answer() {
        let services: Services = serde_json::from_str(include_str!("../fixtures/nova_services.json")).unwrap();
        let first = &services.services[0];
        assert_eq!(first.id, "a29fc9fc-31d0-4a00-a157-a7a309d8502e");
        assert_eq!(first.host, "fake-1");
        assert_eq!(first.zone, "nova");
        assert_eq!(first.status, ServiceStatus::Enabled);
        assert_eq!(first.state, ServiceState::Up);
        assert!(!first.forced_down);
        assert_eq!(first.disabled_reason, None);
        assert_eq!(first.updated_at.unwrap().to_rfc3339(), "2026-11-23T14:12:45+00:00");
    }

    #[test]
    fn a_disabled_forced_down_service_and_an_unknown_state_are_read() {
        let body = r#"{"services": [{"id": "x", "binary": "nova-compute", "host": "fake-2", "zone": "nova",
            "status": "disabled", "state": "UNKNOWN", "updated_at": null,
            "disabled_reason": "aos: fencing", "forced_down": true}]}"#;
        let services: Services = serde_json::from_str(body).unwrap();
        let service = &services.services[0];
        assert_eq!(service.status, ServiceStatus::Disabled);
        assert_eq!(service.state, ServiceState::Unknown);
        assert!(service.forced_down);
        assert_eq!(service.disabled_reason.as_deref(), Some("aos: fencing"));
        assert_eq!(service.updated_at, None);
    }

    #[test]
    fn servers_are_read_with_extended_attributes_flavor_and_metadata() {
        #[derive(Deserialize)]
        struct Servers {
            servers: Vec<RawServer>,
        }
        let servers: Servers = serde_json::from_str(include_str!("../fixtures/nova_servers_detail.json")).unwrap();
        let server = Server::from(servers.servers.into_iter().next().unwrap());
        assert_eq!(server.name, "fixture-vm");
        assert_eq!(server.status, "ACTIVE");
        assert_eq!(server.vm_state.as_deref(), Some("active"));
        assert_eq!(server.task_state, None);
        assert_eq!(server.power_state, PowerState::Running);
        assert_eq!(server.host.as_deref(), Some("fake-1"));
        assert_eq!(server.hypervisor_hostname.as_deref(), Some("fake-1"));
        let flavor = server.flavor.unwrap();
        assert_eq!((flavor.ram_mb, flavor.vcpus, flavor.disk_gb, flavor.swap_mb), (64, 1, 0, 0));
        assert_eq!(flavor.original_name.as_deref(), Some("m1.nano"));
        assert_eq!(server.metadata.get("recovery_priority").map(String::as_str), Some("5"));
        assert_eq!(server.server_groups, None, "lists do not report server groups");
        assert_eq!(server.tenant_id.as_deref(), Some("3a6a91cf00304290ae7ef82b51b0d3d0"));
    }

    #[test]
    fn a_minimal_server_record_from_a_down_cell_still_parses() {
        let raw: RawServer = serde_json::from_str(r#"{"id": "abc", "status": "UNKNOWN", "links": []}"#).unwrap();
        let server = Server::from(raw);
        assert_eq!(server.status, "UNKNOWN");
        assert_eq!(server.power_state, PowerState::NoState);
        assert!(server.flavor.is_none() && server.host.is_none());
    }

    #[test]
    fn old_style_flavor_numbers_are_accepted() {
        let flavor: ServerFlavor =
            serde_json::from_str(r#"{"ram": "512", "vcpus": 2, "disk": 1, "ephemeral": 0, "swap": ""}"#).unwrap();
        assert_eq!((flavor.ram_mb, flavor.vcpus, flavor.swap_mb), (512, 2, 0));
    }

    #[test]
    fn migrations_are_read_with_type_and_hosts() {
        #[derive(Deserialize)]
        struct Migrations {
            migrations: Vec<RawMigration>,
        }
        let migrations: Migrations = serde_json::from_str(include_str!("../fixtures/nova_migrations.json")).unwrap();
        let migration = Migration::from(migrations.migrations.into_iter().next().unwrap());
        assert_eq!(migration.migration_type, MigrationType::LiveMigration);
        assert_eq!(migration.source_compute.as_deref(), Some("fake-1"));
        assert_eq!(migration.dest_compute.as_deref(), Some("fake-2"));
        assert_eq!(migration.instance_uuid, "e089616d-5547-4f34-abdb-df304feb25b5");
        assert!(migration.created_at.is_some());
    }

    #[test]
    fn aggregates_are_read_with_hosts_and_metadata() {
        #[derive(Deserialize)]
        struct Aggregates {
            aggregates: Vec<Aggregate>,
        }
        let aggregates: Aggregates = serde_json::from_str(include_str!("../fixtures/nova_aggregates.json")).unwrap();
        assert_eq!(aggregates.aggregates[0].hosts, vec!["fake-1".to_string()]);
        assert_eq!(aggregates.aggregates[0].name, "fixture-agg");
        // The answer to a create has neither hosts nor metadata.
        let created: Aggregate = serde_json::from_str(
            r#"{"id": 1, "uuid": "5bbaefd1-4961-4b20-9d07-d7c8e32c07af", "name": "fixture-agg",
                "created_at": "2026-11-23T14:08:56.336906", "updated_at": null, "deleted_at": null,
                "deleted": false, "availability_zone": null}"#,
        )
        .unwrap();
        assert!(created.hosts.is_empty() && created.metadata.is_empty());
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(segment("a29fc9fc-31d0-4a00-a157-a7a309d8502e"), "a29fc9fc-31d0-4a00-a157-a7a309d8502e");
        assert_eq!(segment("../x?y"), "..%2Fx%3Fy");
    }
}
