//! A simulated cloud behind the same [`Cloud`] interface as the real Nova client, with BMCs
//! ([`Fencer`]) and node state files ([`StateFiles`]): N hosts, M servers, failure injection
//! (kill, flap, partition, BMC down) and configurable API latencies. It powers
//! `aos-cloud-manager demo` and the tracker benchmark; it never replaces the end-to-end tests
//! against the real Nova.
//!
//! It follows Nova's rules where the HA core depends on them: a service is `down` once its
//! last heartbeat is older than `service_down_time` (or when forced down); evacuation is
//! refused while the source service is up; an evacuated server is rebuilt on the host with
//! the most free RAM among those up, enabled and not forced down, after a rebuild delay, in
//! the state it had (a stopped server stays stopped); each evacuation leaves a migration
//! record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::cloud::{Cloud, CloudError, CloudServer, EvacuationRecord, HostAggregate, HostCapacity, HostObservation};
use crate::fence::{FenceError, FenceReport, FenceTarget, Fencer};
use crate::isolation::{StateFileReading, StateFiles};

#[derive(Debug, Clone)]
pub struct SimSettings {
    /// Latency of every API call.
    pub call_latency: Duration,
    /// How long an evacuated server takes to be rebuilt elsewhere.
    pub rebuild_time: Duration,
    /// Nova's `service_down_time`: a dead host is reported down this long after it died.
    pub service_down_time: Duration,
    /// How long a BMC takes to power a host off.
    pub power_off_time: Duration,
    pub host_vcpus: u64,
    pub host_ram_mb: u64,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            call_latency: Duration::from_millis(20),
            rebuild_time: Duration::from_millis(800),
            service_down_time: Duration::from_secs(2),
            power_off_time: Duration::from_millis(300),
            host_vcpus: 32,
            host_ram_mb: 65_536,
        }
    }
}

#[derive(Debug, Clone)]
struct SimHost {
    service_id: String,
    /// The hypervisor runs (its servers run).
    running: bool,
    /// The control plane hears its heartbeat (false when dead or partitioned).
    heartbeat_reaches_nova: bool,
    last_heartbeat: Instant,
    enabled: bool,
    forced_down: bool,
    has_bmc: bool,
    bmc_reachable: bool,
    /// The BMC refuses "power on" (the host's firmware or PSU failed): fencing still works.
    power_on_refused: bool,
    /// A server the scheduler had already placed here lands when the host is disabled (the
    /// race a reserve-pool parking must survive).
    lands_when_disabled: Option<String>,
}

#[derive(Debug, Clone)]
struct SimServer {
    name: String,
    host: String,
    status: String,
    task_state: Option<String>,
    metadata: BTreeMap<String, String>,
    vcpus: u64,
    ram_mb: u64,
    rebuild: Option<(Instant, String, String)>,
}

#[derive(Debug, Clone)]
struct SimMigration {
    server_id: String,
    source: String,
    dest: String,
    at: DateTime<Utc>,
    done_at: Instant,
}

#[derive(Default)]
struct State {
    hosts: BTreeMap<String, SimHost>,
    servers: BTreeMap<String, SimServer>,
    migrations: Vec<SimMigration>,
    /// id -> (name, hosts)
    aggregates: BTreeMap<i64, (String, BTreeSet<String>)>,
    next_id: u64,
    /// Calls per method, for tests and benchmarks.
    calls: BTreeMap<&'static str, u64>,
    /// Power operations in order (`on h1`, `off h1`, `soft_off h1`, `pxe h1 <mac>`,
    /// `pxe_done h1 <mac>`), for tests that check their order.
    power_log: Vec<String>,
}

pub struct SimCloud {
    settings: SimSettings,
    state: Mutex<State>,
}

impl SimCloud {
    pub fn new(settings: SimSettings) -> Self {
        SimCloud { settings, state: Mutex::new(State::default()) }
    }

    pub fn settings(&self) -> &SimSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add_host(&self, name: &str, has_bmc: bool) {
        let mut state = self.lock();
        state.next_id += 1;
        let service_id = format!("00000000-0000-4000-8000-{:012}", state.next_id);
        state.hosts.insert(
            name.to_owned(),
            SimHost {
                service_id,
                running: true,
                heartbeat_reaches_nova: true,
                last_heartbeat: Instant::now(),
                enabled: true,
                forced_down: false,
                has_bmc,
                bmc_reachable: true,
                power_on_refused: false,
                lands_when_disabled: None,
            },
        );
    }

    /// A standby host: powered off, disabled in Nova, with a BMC.
    pub fn add_reserve_host(&self, name: &str) {
        self.add_host(name, true);
        let mut state = self.lock();
        if let Some(host) = state.hosts.get_mut(name) {
            host.running = false;
            host.heartbeat_reaches_nova = false;
            host.enabled = false;
            host.last_heartbeat = Instant::now() - self.settings.service_down_time - Duration::from_secs(1);
        }
    }

    /// Puts `hosts` in a new aggregate; returns its id.
    pub fn add_aggregate(&self, name: &str, hosts: &[&str]) -> i64 {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id as i64;
        state.aggregates.insert(id, (name.to_owned(), hosts.iter().map(|h| h.to_string()).collect()));
        id
    }

    pub fn aggregate_hosts(&self, id: i64) -> BTreeSet<String> {
        self.lock().aggregates.get(&id).map(|(_, hosts)| hosts.clone()).unwrap_or_default()
    }

    pub fn is_enabled(&self, host: &str) -> bool {
        self.lock().hosts.get(host).is_some_and(|host| host.enabled)
    }

    /// Boots a server on `host`; `stopped` servers are SHUTOFF. Returns its id.
    pub fn add_server(&self, name: &str, host: &str, priority: Option<u32>, stopped: bool) -> String {
        let mut state = self.lock();
        state.next_id += 1;
        let id = format!("5e7e7000-0000-4000-8000-{:012}", state.next_id);
        let metadata =
            priority.map(|p| (crate::cloud::RECOVERY_PRIORITY_KEY.to_owned(), p.to_string())).into_iter().collect();
        state.servers.insert(
            id.clone(),
            SimServer {
                name: name.to_owned(),
                host: host.to_owned(),
                status: if stopped { "SHUTOFF" } else { "ACTIVE" }.to_owned(),
                task_state: None,
                metadata,
                vcpus: 1,
                ram_mb: 2048,
                rebuild: None,
            },
        );
        id
    }

    /// The host crashes: the hypervisor stops, its heartbeat stops.
    pub fn kill(&self, host: &str) {
        if let Some(host) = self.lock().hosts.get_mut(host) {
            host.running = false;
            host.heartbeat_reaches_nova = false;
        }
    }

    /// The host runs again and Nova hears it (a flap when done before `service_down_time`).
    pub fn revive(&self, host: &str) {
        if let Some(host) = self.lock().hosts.get_mut(host) {
            host.running = true;
            host.heartbeat_reaches_nova = true;
            host.last_heartbeat = Instant::now();
        }
    }

    /// The host keeps running its servers but the control plane no longer hears it.
    pub fn partition(&self, host: &str) {
        if let Some(host) = self.lock().hosts.get_mut(host) {
            host.heartbeat_reaches_nova = false;
        }
    }

    /// The host's BMC stops answering (fencing fails).
    pub fn bmc_down(&self, host: &str) {
        if let Some(host) = self.lock().hosts.get_mut(host) {
            host.bmc_reachable = false;
        }
    }

    /// The host's BMC refuses to power it on (fencing still works).
    pub fn refuse_power_on(&self, host: &str) {
        if let Some(host) = self.lock().hosts.get_mut(host) {
            host.power_on_refused = true;
        }
    }

    /// A server named `server` that Nova's scheduler already placed on `host` lands there at
    /// the moment the host is disabled.
    pub fn land_when_disabled(&self, host: &str, server: &str) {
        if let Some(host) = self.lock().hosts.get_mut(host) {
            host.lands_when_disabled = Some(server.to_owned());
        }
    }

    /// The power operations so far, in order.
    pub fn power_log(&self) -> Vec<String> {
        self.lock().power_log.clone()
    }

    pub fn host_names(&self) -> Vec<String> {
        self.lock().hosts.keys().cloned().collect()
    }

    pub fn is_running(&self, host: &str) -> bool {
        self.lock().hosts.get(host).is_some_and(|host| host.running)
    }

    /// Evacuation records per server (every request Nova accepted).
    pub fn evacuation_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for migration in &self.lock().migrations {
            *counts.entry(migration.server_id.clone()).or_insert(0) += 1;
        }
        counts
    }

    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    pub fn servers_snapshot(&self) -> Vec<CloudServer> {
        let mut state = self.lock();
        settle(&mut state);
        state.servers.iter().map(|(id, server)| view(id, server)).collect()
    }

    async fn call(&self, name: &'static str) {
        *self.lock().calls.entry(name).or_insert(0) += 1;
        if !self.settings.call_latency.is_zero() {
            tokio::time::sleep(self.settings.call_latency).await;
        }
    }

    fn nova_up(&self, host: &SimHost, now: Instant) -> bool {
        if host.forced_down {
            return false;
        }
        host.heartbeat_reaches_nova || now.duration_since(host.last_heartbeat) < self.settings.service_down_time
    }
}

/// Heartbeats of hosts Nova hears are "now"; finished rebuilds land.
fn settle(state: &mut State) {
    let now = Instant::now();
    for host in state.hosts.values_mut() {
        if host.heartbeat_reaches_nova {
            host.last_heartbeat = now;
        }
    }
    for server in state.servers.values_mut() {
        if let Some((ready_at, target, status)) = &server.rebuild
            && now >= *ready_at
        {
            server.host = target.clone();
            server.status = status.clone();
            server.task_state = None;
            server.rebuild = None;
        }
    }
}

/// The host whose nova-compute service has this id.
fn host_of_service(state: &State, service_id: &str) -> Result<String, CloudError> {
    state
        .hosts
        .iter()
        .find(|(_, host)| host.service_id == service_id)
        .map(|(name, _)| name.clone())
        .ok_or_else(|| CloudError::NotFound(format!("compute service {service_id}")))
}

fn view(id: &str, server: &SimServer) -> CloudServer {
    CloudServer {
        id: id.to_owned(),
        name: server.name.clone(),
        host: Some(server.host.clone()),
        status: server.status.clone(),
        vm_state: Some(
            match server.status.as_str() {
                "SHUTOFF" => "stopped",
                "ERROR" => "error",
                _ => "active",
            }
            .to_owned(),
        ),
        task_state: server.task_state.clone(),
        metadata: server.metadata.clone(),
        vcpus: server.vcpus,
        ram_mb: server.ram_mb,
    }
}

fn used(state: &State) -> BTreeMap<String, (u64, u64)> {
    let mut used: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for server in state.servers.values() {
        let host = server.rebuild.as_ref().map(|(_, target, _)| target).unwrap_or(&server.host);
        let entry = used.entry(host.clone()).or_default();
        entry.0 += server.vcpus;
        entry.1 += server.ram_mb;
    }
    used
}

#[async_trait]
impl Cloud for SimCloud {
    async fn compute_hosts(&self) -> Result<Vec<HostObservation>, CloudError> {
        self.call("compute_hosts").await;
        let mut state = self.lock();
        settle(&mut state);
        let now = Instant::now();
        Ok(state
            .hosts
            .iter()
            .map(|(name, host)| HostObservation {
                host: name.clone(),
                service_id: host.service_id.clone(),
                up: self.nova_up(host, now),
                enabled: host.enabled,
                forced_down: host.forced_down,
            })
            .collect())
    }

    async fn set_forced_down(&self, service_id: &str, forced_down: bool) -> Result<(), CloudError> {
        self.call("set_forced_down").await;
        let mut state = self.lock();
        let name = host_of_service(&state, service_id)?;
        // Nova refuses to clear forced_down while evacuations away from the host are not
        // cleaned up, which only its nova-compute does when it runs again.
        if !forced_down
            && !state.hosts[&name].running
            && state.migrations.iter().any(|migration| migration.source == name)
        {
            return Err(CloudError::Conflict(format!(
                "evacuations from {name} are not cleaned up: its nova-compute must run first"
            )));
        }
        if let Some(host) = state.hosts.get_mut(&name) {
            host.forced_down = forced_down;
        }
        Ok(())
    }

    async fn set_service_enabled(&self, service_id: &str, enabled: bool, _reason: &str) -> Result<(), CloudError> {
        self.call("set_service_enabled").await;
        let mut state = self.lock();
        let name = host_of_service(&state, service_id)?;
        let Some(host) = state.hosts.get_mut(&name) else {
            return Err(CloudError::NotFound(format!("compute service {service_id}")));
        };
        host.enabled = enabled;
        let landing = if enabled { None } else { host.lands_when_disabled.take() };
        drop(state);
        if let Some(server) = landing {
            self.add_server(&server, &name, None, false);
        }
        Ok(())
    }

    async fn aggregates_of(&self, host: &str) -> Result<Vec<HostAggregate>, CloudError> {
        self.call("aggregates_of").await;
        let state = self.lock();
        Ok(state
            .aggregates
            .iter()
            .filter(|(_, (_, hosts))| hosts.contains(host))
            .map(|(id, (name, hosts))| HostAggregate {
                id: *id,
                name: name.clone(),
                hosts: hosts.iter().cloned().collect(),
            })
            .collect())
    }

    async fn add_to_aggregate(&self, aggregate_id: i64, host: &str) -> Result<(), CloudError> {
        self.call("add_to_aggregate").await;
        let mut state = self.lock();
        let (_, hosts) = state
            .aggregates
            .get_mut(&aggregate_id)
            .ok_or_else(|| CloudError::NotFound(format!("aggregate {aggregate_id}")))?;
        hosts.insert(host.to_owned());
        Ok(())
    }

    async fn servers_on_host(&self, host: &str) -> Result<Vec<CloudServer>, CloudError> {
        self.call("servers_on_host").await;
        let mut state = self.lock();
        settle(&mut state);
        Ok(state
            .servers
            .iter()
            .filter(|(_, server)| server.host == host)
            .map(|(id, server)| view(id, server))
            .collect())
    }

    async fn server(&self, server_id: &str) -> Result<CloudServer, CloudError> {
        self.call("server").await;
        let mut state = self.lock();
        settle(&mut state);
        state
            .servers
            .get(server_id)
            .map(|server| view(server_id, server))
            .ok_or_else(|| CloudError::NotFound(format!("server {server_id}")))
    }

    /// One call for all of them, as Nova's `changes-since` listing is.
    async fn servers_now(
        &self,
        ids: &[String],
        _since: chrono::DateTime<chrono::Utc>,
    ) -> BTreeMap<String, Result<CloudServer, CloudError>> {
        self.call("servers_now").await;
        let mut state = self.lock();
        settle(&mut state);
        ids.iter()
            .map(|id| {
                let answer = state
                    .servers
                    .get(id)
                    .map(|server| view(id, server))
                    .ok_or_else(|| CloudError::NotFound(format!("server {id}")));
                (id.clone(), answer)
            })
            .collect()
    }

    async fn evacuate(&self, server_id: &str) -> Result<(), CloudError> {
        self.call("evacuate").await;
        let mut state = self.lock();
        settle(&mut state);
        let now = Instant::now();
        let server = state.servers.get(server_id).ok_or_else(|| CloudError::NotFound(format!("server {server_id}")))?;
        if server.task_state.is_some() {
            return Err(CloudError::Conflict(format!("server {server_id} is in task_state {:?}", server.task_state)));
        }
        let source = server.host.clone();
        let source_host =
            state.hosts.get(&source).ok_or_else(|| CloudError::Other(format!("unknown host {source}")))?;
        if self.nova_up(source_host, now) {
            return Err(CloudError::Conflict(format!("Compute service of {source} is still in use.")));
        }
        let (vcpus, ram_mb, status) = (server.vcpus, server.ram_mb, server.status.clone());
        let used = used(&state);
        let target = state
            .hosts
            .iter()
            .filter(|(name, host)| **name != source && self.nova_up(host, now) && host.enabled && host.running)
            .map(|(name, _)| {
                let (used_vcpus, used_ram) = used.get(name).copied().unwrap_or((0, 0));
                let free_ram = self.settings.host_ram_mb.saturating_sub(used_ram);
                let free_vcpus = self.settings.host_vcpus.saturating_sub(used_vcpus);
                (name.clone(), free_vcpus, free_ram)
            })
            .filter(|(_, free_vcpus, free_ram)| *free_vcpus >= vcpus && *free_ram >= ram_mb)
            .max_by_key(|(name, _, free_ram)| (*free_ram, std::cmp::Reverse(name.clone())))
            .map(|(name, _, _)| name)
            .ok_or_else(|| CloudError::Other("No valid host was found for the evacuation.".into()))?;
        let final_status = if status == "SHUTOFF" { "SHUTOFF" } else { "ACTIVE" }.to_owned();
        let ready_at = now + self.settings.rebuild_time;
        let server = state.servers.get_mut(server_id).ok_or_else(|| CloudError::NotFound(server_id.to_owned()))?;
        server.status = "REBUILD".into();
        server.task_state = Some("rebuilding".into());
        server.rebuild = Some((ready_at, target.clone(), final_status));
        state.migrations.push(SimMigration {
            server_id: server_id.to_owned(),
            source,
            dest: target,
            at: Utc::now(),
            done_at: ready_at,
        });
        Ok(())
    }

    async fn evacuations_from(&self, host: &str, since: DateTime<Utc>) -> Result<Vec<EvacuationRecord>, CloudError> {
        self.call("evacuations_from").await;
        let state = self.lock();
        let now = Instant::now();
        Ok(state
            .migrations
            .iter()
            .filter(|migration| migration.source == host && migration.at >= since)
            .map(|migration| EvacuationRecord {
                server_id: migration.server_id.clone(),
                source_host: Some(migration.source.clone()),
                dest_host: Some(migration.dest.clone()),
                status: if now >= migration.done_at { "done" } else { "accepted" }.to_owned(),
            })
            .collect())
    }

    async fn capacities(&self) -> Result<Vec<HostCapacity>, CloudError> {
        self.call("capacities").await;
        let mut state = self.lock();
        settle(&mut state);
        let now = Instant::now();
        let used = used(&state);
        Ok(state
            .hosts
            .iter()
            .filter(|(_, host)| self.nova_up(host, now) && host.enabled)
            .map(|(name, _)| {
                let (used_vcpus, used_ram) = used.get(name).copied().unwrap_or((0, 0));
                HostCapacity {
                    host: name.clone(),
                    free_vcpus: self.settings.host_vcpus.saturating_sub(used_vcpus),
                    free_ram_mb: self.settings.host_ram_mb.saturating_sub(used_ram),
                }
            })
            .collect())
    }
}

#[async_trait]
impl Fencer for SimCloud {
    async fn has_power_device(&self, target: &FenceTarget) -> Result<bool, String> {
        Ok(self.lock().hosts.get(&target.node).is_some_and(|host| host.has_bmc))
    }

    async fn fence(
        &self,
        target: &FenceTarget,
        _actor: &str,
        _task_id: Option<&str>,
    ) -> Result<FenceReport, FenceError> {
        let started = Instant::now();
        let (reachable, was_running) = {
            let state = self.lock();
            let host = state.hosts.get(&target.node).ok_or_else(|| FenceError::NoPowerDevice(target.node.clone()))?;
            if !host.has_bmc {
                return Err(FenceError::NoPowerDevice(target.node.clone()));
            }
            (host.bmc_reachable, host.running)
        };
        if !reachable {
            tokio::time::sleep(self.settings.call_latency * 5).await;
            return Err(FenceError::Failed {
                node: target.node.clone(),
                reason: "BMC unreachable (no answer before the timeout)".into(),
            });
        }
        if was_running {
            tokio::time::sleep(self.settings.power_off_time).await;
        }
        let mut state = self.lock();
        state.power_log.push(format!("off {}", target.node));
        if let Some(host) = state.hosts.get_mut(&target.node) {
            host.running = false;
            host.heartbeat_reaches_nova = false;
        }
        Ok(FenceReport {
            device: format!("sim-bmc-{}", target.node),
            was_already_off: !was_running,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn power_on(
        &self,
        target: &FenceTarget,
        _actor: &str,
        _task_id: Option<&str>,
    ) -> Result<FenceReport, FenceError> {
        self.sim_power_on(target).await
    }

    async fn prepare_network_boot(
        &self,
        target: &FenceTarget,
        boot_mac: &str,
        _actor: &str,
        _task_id: Option<&str>,
    ) -> Result<(), FenceError> {
        let mut state = self.lock();
        match state.hosts.get(&target.node) {
            Some(host) if host.has_bmc && host.bmc_reachable => {}
            Some(host) if host.has_bmc => {
                return Err(FenceError::Failed { node: target.node.clone(), reason: "BMC unreachable".into() });
            }
            _ => return Err(FenceError::NoPowerDevice(target.node.clone())),
        }
        state.power_log.push(format!("pxe {} {boot_mac}", target.node));
        Ok(())
    }

    async fn finish_network_boot(&self, target: &FenceTarget, boot_mac: &str) -> Result<(), FenceError> {
        self.lock().power_log.push(format!("pxe_done {} {boot_mac}", target.node));
        Ok(())
    }
}

impl SimCloud {
    async fn sim_power_on(&self, target: &FenceTarget) -> Result<FenceReport, FenceError> {
        let started = Instant::now();
        let (reachable, was_running) = {
            let state = self.lock();
            let host = state.hosts.get(&target.node).ok_or_else(|| FenceError::NoPowerDevice(target.node.clone()))?;
            if !host.has_bmc {
                return Err(FenceError::NoPowerDevice(target.node.clone()));
            }
            if host.power_on_refused {
                return Err(FenceError::Failed {
                    node: target.node.clone(),
                    reason: "the BMC refused power on".into(),
                });
            }
            (host.bmc_reachable, host.running)
        };
        if !reachable {
            return Err(FenceError::Failed { node: target.node.clone(), reason: "BMC unreachable".into() });
        }
        self.lock().power_log.push(format!("on {}", target.node));
        if !was_running {
            tokio::time::sleep(self.settings.power_off_time).await;
            // The hypervisor boots; its nova-compute reports after a boot delay.
            let mut state = self.lock();
            if let Some(host) = state.hosts.get_mut(&target.node) {
                host.running = true;
                host.heartbeat_reaches_nova = true;
                host.last_heartbeat = Instant::now();
            }
        }
        Ok(FenceReport {
            device: format!("sim-bmc-{}", target.node),
            was_already_off: was_running,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }
}

#[async_trait]
impl StateFiles for SimCloud {
    /// A host that still runs writes its state file every moment (as the node agent would);
    /// a dead host writes nothing.
    async fn read(&self, _node_id: i64, node: &str) -> (Vec<StateFileReading>, Vec<String>) {
        let state = self.lock();
        match state.hosts.get(node) {
            Some(host) if host.running => {
                let running: BTreeSet<String> = state
                    .servers
                    .iter()
                    .filter(|(_, server)| server.host == node && server.status == "ACTIVE")
                    .map(|(id, _)| id.clone())
                    .collect();
                (vec![StateFileReading { storage: "sim-storage".into(), written_at: Utc::now(), running }], Vec::new())
            }
            _ => (Vec::new(), Vec::new()),
        }
    }
}
