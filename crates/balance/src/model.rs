//! What the planner reads and what it returns: hosts with their Placement capacity, servers
//! with their flavor's size, server groups, the settings of `[balancing]`, and the plan.
//!
//! These are plain values with no I/O behind them: [`crate::gather`] fills them from Nova and
//! Placement, tests and the benchmark build them by hand.

use serde::{Deserialize, Serialize};

/// One resource class (MEMORY_MB or VCPU) of one host as Placement accounts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// What may be allocated: (total − reserved) × allocation_ratio, as Placement computes it.
    pub capacity: u64,
    /// What is allocated now (Placement's usage, which includes servers being migrated here).
    pub used: u64,
}

/// A host taken for balancing (a nova-compute host of the aggregate that is up, enabled and
/// not on a deny list: the gatherer leaves the others out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// The nova-compute host name, which is what a live migration targets.
    pub name: String,
    pub ram_mb: Capacity,
    pub vcpus: Capacity,
}

/// A server on one of the hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    /// The nova-compute host it runs on; must be one of the input's hosts.
    pub host: String,
    /// Its flavor's RAM and vCPUs.
    pub ram_mb: u64,
    pub vcpus: u64,
    /// Why it must stay where it is (not ACTIVE, a task in progress, on a deny list), or
    /// `None` when balancing may move it. Pinned servers still count for the load and for
    /// their server groups.
    pub pinned: Option<String>,
}

/// Nova's server-group policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupPolicy {
    /// All members on one host: the planner never moves a member (a live migration of one
    /// member alone would break the policy, and Nova's scheduler refuses it).
    Affinity,
    /// At most `max_server_per_host` members per host: never violated by a plan.
    AntiAffinity,
    /// Scheduler preferences only; the planner does not constrain them.
    SoftAffinity,
    SoftAntiAffinity,
}

impl GroupPolicy {
    /// Nova's name of a policy; `None` for a name Nova does not define.
    pub fn parse(policy: &str) -> Option<Self> {
        match policy {
            "affinity" => Some(Self::Affinity),
            "anti-affinity" => Some(Self::AntiAffinity),
            "soft-affinity" => Some(Self::SoftAffinity),
            "soft-anti-affinity" => Some(Self::SoftAntiAffinity),
            _ => None,
        }
    }
}

/// A server group. Members that are not among the input's servers (they run elsewhere) are
/// ignored: a plan only moves servers to the input's hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    pub policy: GroupPolicy,
    pub members: Vec<String>,
    /// For anti-affinity (Nova's `max_server_per_host` rule, 1 when absent).
    pub max_server_per_host: u32,
}

/// Everything the planner knows about one aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalanceInput {
    /// The aggregate's name, for reports.
    pub aggregate: String,
    pub hosts: Vec<Host>,
    pub servers: Vec<Server>,
    pub groups: Vec<ServerGroup>,
}

/// The planner's settings, from `[balancing]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlannerSettings {
    /// `approx`: a host is loaded when its load exceeds the aggregate's load + approx.
    pub approx: f64,
    /// `vcpu_weight`: the weight of the vCPU share in a host's load (0 = RAM only, the
    /// reference semantics). See docs/adr/0014-balancing.md.
    pub vcpu_weight: f64,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        Self { approx: 0.1, vcpu_weight: 0.0 }
    }
}

/// One live migration of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMigration {
    pub server_id: String,
    pub server_name: String,
    pub source: String,
    pub target: String,
    pub ram_mb: u64,
    pub vcpus: u64,
}

/// One host before and after the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub name: String,
    pub ram_mb: Capacity,
    pub vcpus: Capacity,
    pub ram_used_after: u64,
    pub vcpus_used_after: u64,
    /// The host's load (weighted as configured) before and after.
    pub load_before: f64,
    pub load_after: f64,
    pub loaded_before: bool,
    pub loaded_after: bool,
}

/// The planner's answer for one aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub aggregate: String,
    /// Σ used RAM / Σ RAM capacity of the hosts: the reference's "total load".
    pub ram_load: f64,
    /// Σ used vCPUs / Σ vCPU capacity.
    pub vcpu_load: f64,
    /// The aggregate's load with the configured vCPU weight (`ram_load` when it is 0).
    pub aggregate_load: f64,
    /// `aggregate_load + approx`: a host above it is loaded. Migrations do not change it
    /// (they move load inside the aggregate).
    pub threshold: f64,
    /// In the order they should be started.
    pub migrations: Vec<PlannedMigration>,
    /// In the input's order.
    pub hosts: Vec<HostReport>,
}

impl Plan {
    /// No host is loaded after the plan.
    pub fn is_balanced(&self) -> bool {
        self.hosts.iter().all(|host| !host.loaded_after)
    }

    /// Hosts still loaded after the plan (no plan within the constraints brings them into the
    /// band, or none was found).
    pub fn still_loaded(&self) -> impl Iterator<Item = &HostReport> {
        self.hosts.iter().filter(|host| host.loaded_after)
    }

    /// RAM the plan moves, in MB.
    pub fn moved_ram_mb(&self) -> u64 {
        self.migrations.iter().map(|migration| migration.ram_mb).sum()
    }
}

/// Input the planner cannot work with; the message names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("invalid balancing input: {field}: {message}")]
    InvalidInput { field: String, message: String },
}

impl PlanError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput { field: field.into(), message: message.into() }
    }
}
