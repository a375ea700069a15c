//! The evacuation plan of a failed host: its servers grouped by recovery priority, and a
//! capacity check against the hosts that remain. Pure; used by the recovery task and by
//! `node evacuate --dry-run`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cloud::{CloudServer, HostCapacity, RECOVERY_PRIORITY_KEY};

/// The highest priority (evacuated first).
pub const MAX_PRIORITY: u32 = 10;

/// One server to evacuate, with the state it must be found in afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedServer {
    pub id: String,
    pub name: String,
    /// `ACTIVE` or `SHUTOFF`: what the server was before the failure.
    pub expected_status: String,
    pub vcpus: u64,
    pub ram_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityGroup {
    pub priority: u32,
    pub servers: Vec<PlannedServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationPlan {
    pub host: String,
    /// Highest priority first.
    pub groups: Vec<PriorityGroup>,
    /// Priority 0: left where they are.
    pub skipped: Vec<PlannedServer>,
    pub capacity: CapacityCheck,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityCheck {
    pub needed_vcpus: u64,
    pub needed_ram_mb: u64,
    pub free_vcpus: u64,
    pub free_ram_mb: u64,
    /// Servers that do not fit anywhere by a first-fit placement on the free room (largest
    /// first); the scheduler may do better or worse, this is a warning, not a promise.
    pub unplaced: Vec<String>,
}

impl CapacityCheck {
    pub fn sufficient(&self) -> bool {
        self.unplaced.is_empty()
    }
}

/// The recovery priority of a server: its metadata, or `default`; clamped to 0..=10.
pub fn priority_of(server: &CloudServer, default: u32) -> u32 {
    server
        .metadata
        .get(RECOVERY_PRIORITY_KEY)
        .and_then(|value| value.trim().parse::<u32>().ok())
        .unwrap_or(default)
        .min(MAX_PRIORITY)
}

/// What the server should look like once evacuated: a stopped server stays stopped.
pub fn expected_status(server: &CloudServer) -> &'static str {
    match (server.vm_state.as_deref(), server.status.as_str()) {
        (Some("stopped"), _) | (None, "SHUTOFF") => "SHUTOFF",
        _ => "ACTIVE",
    }
}

pub fn plan(host: &str, servers: &[CloudServer], capacities: &[HostCapacity], default_priority: u32) -> EvacuationPlan {
    let mut groups: BTreeMap<u32, Vec<PlannedServer>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for server in servers {
        let planned = PlannedServer {
            id: server.id.clone(),
            name: server.name.clone(),
            expected_status: expected_status(server).to_owned(),
            vcpus: server.vcpus,
            ram_mb: server.ram_mb,
        };
        match priority_of(server, default_priority) {
            0 => skipped.push(planned),
            priority => groups.entry(priority).or_default().push(planned),
        }
    }
    let groups: Vec<PriorityGroup> = groups
        .into_iter()
        .rev()
        .map(|(priority, mut servers)| {
            servers.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            PriorityGroup { priority, servers }
        })
        .collect();
    let capacity = check_capacity(groups.iter().flat_map(|group| group.servers.iter()), capacities, host);
    EvacuationPlan { host: host.to_owned(), groups, skipped, capacity }
}

fn check_capacity<'a>(
    servers: impl Iterator<Item = &'a PlannedServer>,
    capacities: &[HostCapacity],
    failed_host: &str,
) -> CapacityCheck {
    let mut free: Vec<(u64, u64)> = capacities
        .iter()
        .filter(|capacity| capacity.host != failed_host)
        .map(|capacity| (capacity.free_vcpus, capacity.free_ram_mb))
        .collect();
    let mut servers: Vec<&PlannedServer> = servers.collect();
    servers.sort_by(|a, b| b.ram_mb.cmp(&a.ram_mb).then(b.vcpus.cmp(&a.vcpus)));
    let mut check = CapacityCheck {
        needed_vcpus: servers.iter().map(|s| s.vcpus).sum(),
        needed_ram_mb: servers.iter().map(|s| s.ram_mb).sum(),
        free_vcpus: free.iter().map(|f| f.0).sum(),
        free_ram_mb: free.iter().map(|f| f.1).sum(),
        unplaced: Vec::new(),
    };
    for server in servers {
        match free.iter_mut().find(|(vcpus, ram)| *vcpus >= server.vcpus && *ram >= server.ram_mb) {
            Some(slot) => {
                slot.0 -= server.vcpus;
                slot.1 -= server.ram_mb;
            }
            None => check.unplaced.push(server.id.clone()),
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, priority: Option<&str>, vm_state: &str) -> CloudServer {
        CloudServer {
            id: id.into(),
            name: id.into(),
            host: Some("dead".into()),
            status: if vm_state == "stopped" { "SHUTOFF".into() } else { "ACTIVE".into() },
            vm_state: Some(vm_state.into()),
            task_state: None,
            metadata: priority.map(|p| (RECOVERY_PRIORITY_KEY.to_string(), p.to_string())).into_iter().collect(),
            vcpus: 1,
            ram_mb: 512,
        }
    }

    fn room(host: &str, vcpus: u64, ram_mb: u64) -> HostCapacity {
        HostCapacity { host: host.into(), free_vcpus: vcpus, free_ram_mb: ram_mb }
    }

    #[test]
    fn groups_go_highest_priority_first_and_priority_0_stays_put() {
        let servers = [
            server("a", Some("10"), "active"),
            server("b", None, "active"),
            server("c", Some("0"), "active"),
            server("d", Some("7"), "stopped"),
            server("e", Some("not a number"), "active"),
        ];
        let plan = plan("dead", &servers, &[room("h2", 100, 100_000)], 5);
        let order: Vec<(u32, Vec<&str>)> = plan
            .groups
            .iter()
            .map(|group| (group.priority, group.servers.iter().map(|s| s.id.as_str()).collect()))
            .collect();
        assert_eq!(order, vec![(10, vec!["a"]), (7, vec!["d"]), (5, vec!["b", "e"])]);
        assert_eq!(plan.skipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(plan.groups[1].servers[0].expected_status, "SHUTOFF");
        assert!(plan.capacity.sufficient());
    }

    #[test]
    fn priorities_above_10_are_clamped() {
        assert_eq!(priority_of(&server("a", Some("99"), "active"), 5), 10);
    }

    #[test]
    fn capacity_short_lists_the_servers_that_do_not_fit_and_ignores_the_failed_host() {
        let servers = [server("a", None, "active"), server("b", None, "active"), server("c", None, "active")];
        let plan = plan("dead", &servers, &[room("h2", 8, 1024), room("dead", 64, 65_536)], 5);
        assert_eq!(plan.capacity.unplaced.len(), 1);
        assert!(!plan.capacity.sufficient());
        assert_eq!(plan.capacity.needed_ram_mb, 1536);
        assert_eq!(plan.capacity.free_ram_mb, 1024);
    }
}
