//! The typed configuration: one struct per ini section, fields named exactly like the ini keys,
//! holding only validated values. This is what the daemons and the CLI receive.
//!
//! Conventions: every time value is a `std::time::Duration`, converted from the unit the key is
//! documented in (hours for `[balancing] periodic_time`, minutes for `[node_tracker]
//! timeout_reserv_node_up`, seconds everywhere else); optional paths are `Option<PathBuf>`; a
//! status port of 0 ("disabled") is `None`; secrets are [`Secret`]s, so `Debug` of the whole
//! [`Config`] is safe to log.
//!
//! Cross-option rules live here, next to the fields they relate.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigProblem;
use crate::raw::RawConfig;
use crate::secret::Secret;
use crate::urls::{DatabaseUrl, TransportUrl};
use crate::validate::{Values, validate};

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub default: DefaultSection,
    pub agent: AgentSection,
    pub api: ApiSection,
    pub balancing: BalancingSection,
    pub beat: BeatSection,
    pub coordination: CoordinationSection,
    pub database: DatabaseSection,
    pub drs: DrsSection,
    pub drs_trigger: DrsTriggerSection,
    pub extra_availability_check: ExtraAvailabilityCheckSection,
    pub host_tasks: HostTasksSection,
    pub keystone_authtoken: KeystoneAuthtokenSection,
    pub listener: ListenerSection,
    pub node_sync: NodeSyncSection,
    pub node_tracker: NodeTrackerSection,
    pub nova_database: NovaDatabaseSection,
    pub power: PowerSection,
    pub pxe: PxeSection,
    pub storage_sync: StorageSyncSection,
    pub worker: WorkerSection,
}

impl Config {
    /// The configuration with every option at its built-in default, as if no file were read.
    pub fn from_defaults() -> Config {
        match validate(&RawConfig::default()) {
            Ok(validated) => validated.config,
            // Unreachable unless a default in the option table is invalid, which the unit
            // tests of this crate rule out.
            Err(error) => panic!("the built-in defaults are invalid:\n{error}"),
        }
    }

    pub(crate) fn build(values: &mut Values, problems: &mut Vec<ConfigProblem>) -> Config {
        let default = DefaultSection::build(values);
        let listener = ListenerSection::build(values, &default.transport_url);
        Config {
            agent: AgentSection::build(values),
            api: ApiSection::build(values),
            balancing: BalancingSection::build(values),
            beat: BeatSection {
                logfile: values.path("beat", "logfile"),
                status_port: values.optional_port("beat", "status_port"),
            },
            coordination: CoordinationSection::build(values, problems),
            database: DatabaseSection::build(values),
            drs: DrsSection::build(values),
            drs_trigger: DrsTriggerSection::build(values),
            extra_availability_check: ExtraAvailabilityCheckSection::build(values),
            host_tasks: HostTasksSection::build(values),
            keystone_authtoken: KeystoneAuthtokenSection::build(values),
            node_sync: NodeSyncSection::build(values),
            node_tracker: NodeTrackerSection::build(values),
            nova_database: NovaDatabaseSection { url: values.database_url("nova_database", "url") },
            power: PowerSection::build(values),
            pxe: PxeSection { conf_dir: values.required_path("pxe", "conf_dir") },
            storage_sync: StorageSyncSection::build(values),
            worker: WorkerSection::build(values),
            default,
            listener,
        }
    }
}

/// `[DEFAULT]`: logging, the message broker, and this instance's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultSection {
    pub debug: bool,
    /// DHCP server lease files, read in order; a missing file is the reader's concern.
    pub dhcp_leases: Vec<PathBuf>,
    /// This instance's identity in coordination leases. Already resolved: an empty `host`
    /// becomes the machine's hostname, so two controllers never share a name by accident.
    pub host: String,
    pub log_dir: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    /// How long a daemon lets in-flight work finish after SIGTERM.
    pub shutdown_timeout: Duration,
    pub transport_url: TransportUrl,
}

impl DefaultSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "DEFAULT";
        let host = values.text(S, "host");
        Self {
            debug: values.bool(S, "debug"),
            dhcp_leases: values.path_list(S, "dhcp_leases"),
            host: if host.is_empty() { system_hostname() } else { host },
            log_dir: values.path(S, "log_dir"),
            log_file: values.path(S, "log_file"),
            shutdown_timeout: values.duration(S, "shutdown_timeout"),
            transport_url: values.required_transport_url(S, "transport_url"),
        }
    }
}

/// The kernel's hostname, read from procfs because `gethostname(2)` would need `unsafe` or a
/// new dependency; falls back to `$HOSTNAME`, then `localhost`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|name| !name.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `[agent]`: the aos-cloud-manager-agent service and how we talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSection {
    pub agent_confirm_timeout: Duration,
    pub agent_response_timeout: Duration,
    /// Multiplier of the exponential back-off between connection attempts (seconds).
    pub backoff_factor: f64,
    /// Node role: the broker user whose requests a node agent accepts.
    pub controller_user: String,
    pub enabled: bool,
    /// Node role: period of heartbeats and state-file writes.
    pub heartbeat_interval: Duration,
    /// Controller role: a heartbeat older than this means the agent is silent.
    pub heartbeat_stale_after: Duration,
    pub logfile: Option<PathBuf>,
    /// Controller role: node `NAME` must be broker user `<node_user_prefix>NAME`.
    pub node_user_prefix: String,
    /// Controller role: resends of a request after a missing confirm or response.
    pub request_retries: u32,
    /// Local status endpoint port; `None` when configured as 0 (disabled).
    pub status_port: Option<u16>,
    /// Node role: availability storages mounted on this node.
    pub storage_paths: Vec<PathBuf>,
}

impl AgentSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "agent";
        Self {
            agent_confirm_timeout: values.duration(S, "agent_confirm_timeout"),
            agent_response_timeout: values.duration(S, "agent_response_timeout"),
            backoff_factor: values.float(S, "backoff_factor"),
            controller_user: values.text(S, "controller_user"),
            enabled: values.bool(S, "enabled"),
            heartbeat_interval: values.duration(S, "heartbeat_interval"),
            heartbeat_stale_after: values.duration(S, "heartbeat_stale_after"),
            logfile: values.path(S, "logfile"),
            node_user_prefix: values.text(S, "node_user_prefix"),
            request_retries: values.integer(S, "request_retries"),
            status_port: values.optional_port(S, "status_port"),
            storage_paths: values.path_list(S, "storage_paths"),
        }
    }
}

/// `[api]`: the CloudManager REST API service.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSection {
    pub audit_enabled: bool,
    /// Listen address; empty means all IPv4 interfaces (see [`ApiSection::bind_address`]).
    pub host: String,
    pub logfile: Option<PathBuf>,
    /// Page size limit of list requests.
    pub max_limit: u32,
    /// Rules overriding the built-in policy defaults; `None`: defaults only.
    pub policy_file: Option<PathBuf>,
    /// Listen port; 0 lets the system pick one (tests).
    pub port: u16,
    /// Entries of the validated-token cache.
    pub token_cache_size: u32,
    /// How long a validated token is trusted before Keystone is asked again (zero: always ask).
    pub token_cache_time: Duration,
}

impl ApiSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "api";
        Self {
            audit_enabled: values.bool(S, "audit_enabled"),
            host: values.text(S, "host"),
            logfile: values.path(S, "logfile"),
            max_limit: values.integer(S, "max_limit"),
            policy_file: values.path(S, "policy_file"),
            port: values.port(S, "port"),
            token_cache_size: values.integer(S, "token_cache_size"),
            token_cache_time: values.duration(S, "token_cache_time"),
        }
    }

    /// `host:port` for binding a listener: an empty host is `0.0.0.0`, an IPv6 literal is
    /// bracketed.
    pub fn bind_address(&self) -> String {
        match self.host.as_str() {
            "" => format!("0.0.0.0:{}", self.port),
            host if host.contains(':') => format!("[{host}]:{}", self.port),
            host => format!("{host}:{}", self.port),
        }
    }
}

/// `[balancing]`: periodic RAM balancing of host aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancingSection {
    /// Accuracy in 0..=1 added to the average load before a node counts as loaded.
    pub approx: f64,
    /// Hosts neither balanced from nor to.
    pub deny_hosts: Vec<String>,
    pub enabled: bool,
    pub migration_retries: u32,
    /// Configured in hours.
    pub periodic_time: Duration,
    /// Weight of the vCPU share in a host's load (0 = RAM only).
    pub vcpu_weight: f64,
}

impl BalancingSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "balancing";
        Self {
            approx: values.float(S, "approx"),
            deny_hosts: values.text_list(S, "deny_hosts"),
            enabled: values.bool(S, "enabled"),
            migration_retries: values.integer(S, "migration_retries"),
            periodic_time: values.duration(S, "periodic_time"),
            vcpu_weight: values.float(S, "vcpu_weight"),
        }
    }
}

/// `[beat]`: the periodic scheduler service.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatSection {
    pub logfile: Option<PathBuf>,
    /// `None` when configured as 0 (disabled).
    pub status_port: Option<u16>,
}

/// `[coordination]`: leases that keep singleton jobs on one controller at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinationSection {
    /// Always shorter than `lease_ttl`, so a healthy holder renews before its lease lapses.
    pub lease_renew_interval: Duration,
    pub lease_ttl: Duration,
}

impl CoordinationSection {
    fn build(values: &mut Values, problems: &mut Vec<ConfigProblem>) -> Self {
        const S: &str = "coordination";
        let section = Self {
            lease_renew_interval: values.duration(S, "lease_renew_interval"),
            lease_ttl: values.duration(S, "lease_ttl"),
        };
        if values.is_valid(S, "lease_renew_interval")
            && values.is_valid(S, "lease_ttl")
            && section.lease_renew_interval >= section.lease_ttl
        {
            let (origin, value) = values.provenance(S, "lease_renew_interval");
            let (ttl_origin, ttl) = values.provenance(S, "lease_ttl");
            problems.push(ConfigProblem::InvalidValue {
                origin,
                section: S.to_owned(),
                key: "lease_renew_interval".to_owned(),
                value,
                reason: format!("must be less than [{S}] lease_ttl ({ttl}, from {ttl_origin})"),
            });
        }
        section
    }
}

/// `[database]`: this module's own database.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSection {
    pub connect_timeout: Duration,
    pub max_connections: u32,
    pub url: DatabaseUrl,
}

impl DatabaseSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "database";
        Self {
            connect_timeout: values.duration(S, "connect_timeout"),
            max_connections: values.integer(S, "max_connections"),
            url: values.required_database_url(S, "url"),
        }
    }
}

/// `[drs]`: the external DRS system; an empty `host` means none is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct DrsSection {
    pub host: String,
    pub password: Secret<String>,
    pub port: u16,
    pub username: String,
}

impl DrsSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "drs";
        Self {
            host: values.text(S, "host"),
            password: Secret::new(values.text(S, "password")),
            port: values.port(S, "port"),
            username: values.text(S, "username"),
        }
    }
}

/// `[drs_trigger]`: automatic application of DRS audit results.
#[derive(Debug, Clone, PartialEq)]
pub struct DrsTriggerSection {
    pub enabled: bool,
    pub logfile: Option<PathBuf>,
    pub trigger_interval: Duration,
}

impl DrsTriggerSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "drs_trigger";
        Self {
            enabled: values.bool(S, "enabled"),
            logfile: values.path(S, "logfile"),
            trigger_interval: values.duration(S, "trigger_interval"),
        }
    }
}

/// `[extra_availability_check]`: confirming a node's death through shared storage.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraAvailabilityCheckSection {
    pub attempts: u32,
    pub delay: Duration,
    pub enabled: bool,
    /// Percentage, 0..=100.
    pub instance_rate: u32,
}

impl ExtraAvailabilityCheckSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "extra_availability_check";
        Self {
            attempts: values.integer(S, "attempts"),
            delay: values.duration(S, "delay"),
            enabled: values.bool(S, "enabled"),
            instance_rate: values.integer(S, "instance_rate"),
        }
    }
}

/// `[host_tasks]`: evacuation behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTasksSection {
    pub allow_evacuate_host: bool,
    /// Host names never evacuated automatically.
    pub deny_evacuate: Vec<String>,
    pub evacuation_retries: u32,
    pub prioritized_evacuation_timeout: Duration,
    pub recovery_priority: u32,
    pub retries_wait_for_node_state: u32,
    pub retries_wait_for_vm_status: u32,
}

impl HostTasksSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "host_tasks";
        Self {
            allow_evacuate_host: values.bool(S, "allow_evacuate_host"),
            deny_evacuate: values.text_list(S, "deny_evacuate"),
            evacuation_retries: values.integer(S, "evacuation_retries"),
            prioritized_evacuation_timeout: values.duration(S, "prioritized_evacuation_timeout"),
            recovery_priority: values.integer(S, "recovery_priority"),
            retries_wait_for_node_state: values.integer(S, "retries_wait_for_node_state"),
            retries_wait_for_vm_status: values.integer(S, "retries_wait_for_vm_status"),
        }
    }
}

/// Which catalog endpoint to use for other OpenStack services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointInterface {
    Public,
    Internal,
    Admin,
}

impl EndpointInterface {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointInterface::Public => "public",
            EndpointInterface::Internal => "internal",
            EndpointInterface::Admin => "admin",
        }
    }
}

/// `[keystone_authtoken]`: the service user's credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct KeystoneAuthtokenSection {
    pub auth_url: url::Url,
    pub interface: EndpointInterface,
    pub password: Secret<String>,
    pub project_domain_name: String,
    pub project_name: String,
    pub region_name: String,
    pub user_domain_name: String,
    pub username: String,
}

impl KeystoneAuthtokenSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "keystone_authtoken";
        let interface = match values.text(S, "interface").as_str() {
            "public" => EndpointInterface::Public,
            "admin" => EndpointInterface::Admin,
            // The only other value the option table's choices allow.
            _ => EndpointInterface::Internal,
        };
        Self {
            auth_url: values.http_url(S, "auth_url"),
            interface,
            password: Secret::new(values.text(S, "password")),
            project_domain_name: values.text(S, "project_domain_name"),
            project_name: values.text(S, "project_name"),
            region_name: values.text(S, "region_name"),
            user_domain_name: values.text(S, "user_domain_name"),
            username: values.text(S, "username"),
        }
    }
}

/// `[listener]`: consumption of Nova's notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSection {
    /// Declare our queue (and Nova's exchange) durable.
    pub durability: bool,
    pub logfile: Option<PathBuf>,
    pub notification_exchange: String,
    pub notification_topic: String,
    pub nova_rabbit_vhost: String,
    /// Where Nova's notifications are read from. Already resolved: when the option is empty
    /// this is `[DEFAULT] transport_url` on the `nova_rabbit_vhost` virtual host.
    pub nova_transport_url: TransportUrl,
    pub queue_name: String,
    /// `None` when configured as 0 (disabled).
    pub status_port: Option<u16>,
}

impl ListenerSection {
    fn build(values: &mut Values, default_transport: &TransportUrl) -> Self {
        const S: &str = "listener";
        let nova_rabbit_vhost = values.text(S, "nova_rabbit_vhost");
        let nova_transport_url = values
            .transport_url(S, "nova_transport_url")
            .unwrap_or_else(|| default_transport.with_vhost(&nova_rabbit_vhost));
        Self {
            durability: values.bool(S, "durability"),
            logfile: values.path(S, "logfile"),
            notification_exchange: values.text(S, "notification_exchange"),
            notification_topic: values.text(S, "notification_topic"),
            nova_rabbit_vhost,
            nova_transport_url,
            queue_name: values.text(S, "queue_name"),
            status_port: values.optional_port(S, "status_port"),
        }
    }
}

/// `[node_sync]`: synchronisation of compute nodes with Nova.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSyncSection {
    pub enabled: bool,
    pub logfile: Option<PathBuf>,
    pub reserve_interval: Duration,
    pub sync_interval: Duration,
}

impl NodeSyncSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "node_sync";
        Self {
            enabled: values.bool(S, "enabled"),
            logfile: values.path(S, "logfile"),
            reserve_interval: values.duration(S, "reserve_interval"),
            sync_interval: values.duration(S, "sync_interval"),
        }
    }
}

/// `[node_tracker]`: detection of failed compute nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTrackerSection {
    pub allow_host_auto_power_off: bool,
    pub enabled: bool,
    pub host_restart_timeout: Duration,
    pub logfile: Option<PathBuf>,
    pub loop_time: Duration,
    /// More nodes down than this (standby ones excluded) stops all automatic evacuation: a
    /// mass outage is more likely a network or control-plane fault than dead hosts.
    pub max_down_hosts: u32,
    /// Consecutive "down" observations before the down handler runs.
    pub mutex: u32,
    /// Consecutive "up" observations before the up handler runs.
    pub mutex_up: u32,
    /// Configured in minutes.
    pub timeout_reserv_node_up: Duration,
}

impl NodeTrackerSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "node_tracker";
        Self {
            allow_host_auto_power_off: values.bool(S, "allow_host_auto_power_off"),
            enabled: values.bool(S, "enabled"),
            host_restart_timeout: values.duration(S, "host_restart_timeout"),
            logfile: values.path(S, "logfile"),
            loop_time: values.duration(S, "loop_time"),
            max_down_hosts: values.integer(S, "max_down_hosts"),
            mutex: values.integer(S, "mutex"),
            mutex_up: values.integer(S, "mutex_up"),
            timeout_reserv_node_up: values.duration(S, "timeout_reserv_node_up"),
        }
    }
}

/// `[nova_database]`: optional direct access to Nova's database.
#[derive(Debug, Clone, PartialEq)]
pub struct NovaDatabaseSection {
    pub url: Option<DatabaseUrl>,
}

/// `[power]`: power device calls (time limits, IPMI retransmissions, verification polling),
/// the key that encrypts device credentials, and polling while a node is powered off through
/// its console utility.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerSection {
    /// Overall limit of one device call; the process or request is abandoned after it.
    pub command_timeout: Duration,
    /// The key file for device credentials (read by aos-power, never by this crate).
    pub credential_key_file: PathBuf,
    /// ipmitool `-R`.
    pub ipmi_retries: u32,
    /// ipmitool `-N`.
    pub ipmi_retry_timeout: Duration,
    pub poll_interval: Duration,
    pub shutdown_interval: Duration,
    pub shutdown_max_tick: u32,
    /// How long the state is polled after an action until it shows the expected state.
    pub verify_timeout: Duration,
}

impl PowerSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "power";
        Self {
            command_timeout: values.duration(S, "command_timeout"),
            credential_key_file: values.required_path(S, "credential_key_file"),
            ipmi_retries: values.integer(S, "ipmi_retries"),
            ipmi_retry_timeout: values.duration(S, "ipmi_retry_timeout"),
            poll_interval: values.duration(S, "poll_interval"),
            shutdown_interval: values.duration(S, "shutdown_interval"),
            shutdown_max_tick: values.integer(S, "shutdown_max_tick"),
            verify_timeout: values.duration(S, "verify_timeout"),
        }
    }
}

/// `[pxe]`: PXE boot configuration of standby nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct PxeSection {
    pub conf_dir: PathBuf,
}

/// `[storage_sync]`: synchronisation of storages.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSyncSection {
    pub enabled: bool,
    pub logfile: Option<PathBuf>,
    pub sync_interval: Duration,
}

impl StorageSyncSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "storage_sync";
        Self {
            enabled: values.bool(S, "enabled"),
            logfile: values.path(S, "logfile"),
            sync_interval: values.duration(S, "sync_interval"),
        }
    }
}

/// `[worker]`: the task worker service.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSection {
    pub concurrency: u32,
    pub logfile: Option<PathBuf>,
    pub queue_prefix: String,
    /// `None` when configured as 0 (disabled).
    pub status_port: Option<u16>,
    pub task_stale_after: Duration,
}

impl WorkerSection {
    fn build(values: &mut Values) -> Self {
        const S: &str = "worker";
        Self {
            concurrency: values.integer(S, "concurrency"),
            logfile: values.path(S, "logfile"),
            queue_prefix: values.text(S, "queue_prefix"),
            status_port: values.optional_port(S, "status_port"),
            task_stale_after: values.duration(S, "task_stale_after"),
        }
    }
}
