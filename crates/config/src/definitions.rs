//! The option table: every section and key we know, with its type, range, default, help text,
//! secrecy and the example file it is documented in.
//!
//! This table is the single source of truth. Validation reads the kind and range from it, the
//! typed sections read their values through it, `config show` lists it, and the shipped
//! `etc/aos/*.conf.example` files are rendered from it (a unit test fails when they drift).
//! Adding an option means adding a row here and a field in `sections`; a debug assertion in
//! validation and a unit test catch a row that no section reads.
//!
//! Rows are sorted by section (`DEFAULT` first, then alphabetical) and by key inside a section,
//! matching the reference product's table; `config show` and the examples keep that order.
//!
//! Defaults are written as the text an operator would put in the file, so they go through the
//! same parser as file values and cannot disagree with what the example files show.

/// Which shipped example file documents an option.
///
/// The rule: what every AccentOS-style module on a host shares (logging, the RabbitMQ
/// transport, the instance name, shutdown timing, Keystone credentials, database pool tuning,
/// coordination leases) is documented in `aos.conf`; everything only CloudManager reads goes to
/// `cloud_manager.conf` — including `[DEFAULT] dhcp_leases` and the `[database]` /
/// `[nova_database]` URLs, which the reference product keeps there because each module has its
/// own database. Either file may set any option; this only decides where it is documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExampleFile {
    /// `/etc/aos/aos.conf`, shared by all modules.
    AosConf,
    /// `/etc/aos/cloud_manager.conf`, this module's overrides and own options.
    CloudManagerConf,
}

/// Unit of an integer duration option. The reference mixes units (hours for
/// `[balancing] periodic_time`, minutes for `[node_tracker] timeout_reserv_node_up`, seconds
/// elsewhere); the typed config always holds a `std::time::Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Minutes,
    Hours,
}

impl TimeUnit {
    pub fn seconds(self) -> u64 {
        match self {
            TimeUnit::Seconds => 1,
            TimeUnit::Minutes => 60,
            TimeUnit::Hours => 3600,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Seconds => "seconds",
            TimeUnit::Minutes => "minutes",
            TimeUnit::Hours => "hours",
        }
    }
}

/// The type of an option and the range its values must fall in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionKind {
    /// oslo booleans: true/false, yes/no, on/off, 1/0 (any case).
    Bool,
    /// A non-negative integer in `min..=max`.
    Integer { min: u32, max: u32 },
    /// A non-negative integer number of `unit`s, at least `min`.
    Duration { unit: TimeUnit, min: u32 },
    /// A finite floating point number in `min..=max`.
    Float { min: f64, max: f64 },
    /// A TCP port, at least `min`; what 0 means (when allowed) is said in the help text.
    Port { min: u16 },
    /// Free text.
    Text { allow_empty: bool },
    /// A host name or an IP address literal.
    Host { allow_empty: bool },
    /// One of a fixed set of words.
    Choice { choices: &'static [&'static str] },
    /// A filesystem path; empty means "not set" when allowed.
    Path { allow_empty: bool },
    /// Comma-separated paths; empty means none.
    PathList,
    /// Comma-separated words; empty means none.
    TextList,
    /// An `http://` or `https://` URL.
    HttpUrl,
    /// A database URL in SQLAlchemy form (see [`crate::DatabaseUrl`]).
    DatabaseUrl { allow_empty: bool },
    /// An oslo.messaging transport URL (see [`crate::TransportUrl`]).
    TransportUrl { allow_empty: bool },
}

/// `Integer::max` meaning "no upper bound beyond what the field type holds".
pub const UNBOUNDED: u32 = u32::MAX;

impl OptionKind {
    /// Short type and range description, as shown in the example files: `integer, >= 0`.
    pub fn describe(&self) -> String {
        fn range<T: std::fmt::Display + PartialEq>(min: T, max: T, unbounded: T) -> String {
            if max == unbounded { format!(">= {min}") } else { format!("{min} to {max}") }
        }
        match *self {
            OptionKind::Bool => "boolean".to_owned(),
            OptionKind::Integer { min, max } => format!("integer, {}", range(min, max, UNBOUNDED)),
            OptionKind::Duration { unit, min } => format!("integer {}, >= {min}", unit.name()),
            OptionKind::Float { min, max } => {
                format!("floating point, {}", range(min, max, f64::INFINITY))
            }
            OptionKind::Port { min } => format!("port, {min} to 65535"),
            OptionKind::Text { .. } => "string".to_owned(),
            OptionKind::Host { .. } => "host name or IP address".to_owned(),
            OptionKind::Choice { choices } => format!("one of: {}", choices.join(", ")),
            OptionKind::Path { .. } => "path".to_owned(),
            OptionKind::PathList => "comma-separated list of paths".to_owned(),
            OptionKind::TextList => "comma-separated list".to_owned(),
            OptionKind::HttpUrl => "http(s) URL".to_owned(),
            OptionKind::DatabaseUrl { .. } => "database URL".to_owned(),
            OptionKind::TransportUrl { .. } => "transport URL".to_owned(),
        }
    }
}

/// One row of the option table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionDef {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: OptionKind,
    /// The default as ini text; parsed like a file value.
    pub default: &'static str,
    pub help: &'static str,
    pub file: ExampleFile,
    /// Masked in `config show`, in error messages and in `Debug` output.
    pub secret: bool,
}

impl OptionDef {
    const fn new(
        file: ExampleFile,
        section: &'static str,
        key: &'static str,
        kind: OptionKind,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Self { section, key, kind, default, help, file, secret: false }
    }

    const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

use ExampleFile::{AosConf as AOS, CloudManagerConf as CM};
use OptionKind as K;

const fn seconds(min: u32) -> OptionKind {
    K::Duration { unit: TimeUnit::Seconds, min }
}

const fn integer(min: u32, max: u32) -> OptionKind {
    K::Integer { min, max }
}

const OPTIONAL_PATH: OptionKind = K::Path { allow_empty: true };
const REQUIRED_TEXT: OptionKind = K::Text { allow_empty: false };
const STATUS_PORT_HELP: &str = "Port of this service's status endpoint (/healthz, /readyz, /metrics). 0 disables \
     the endpoint.";

/// Every option we know, in display order (see the module documentation).
pub static OPTIONS: &[OptionDef] = &[
    // [DEFAULT]
    OptionDef::new(AOS, "DEFAULT", "debug", K::Bool, "False", "Log at debug level instead of info."),
    OptionDef::new(
        CM,
        "DEFAULT",
        "dhcp_leases",
        K::PathList,
        "/var/lib/dhcp/dhcpd/state/dhcpd.leases, /var/lib/dhcp/dhcpd.leases",
        "Paths to the .leases files of the DHCP server, used to find the addresses of compute \
         nodes booted over PXE.",
    ),
    OptionDef::new(
        AOS,
        "DEFAULT",
        "host",
        K::Host { allow_empty: true },
        "",
        "Name of this service instance, used as its identity in coordination leases; it must \
         differ between controllers. Empty: the machine's hostname.",
    ),
    OptionDef::new(
        AOS,
        "DEFAULT",
        "log_dir",
        OPTIONAL_PATH,
        "",
        "Base directory used for relative log file paths. Empty: relative paths are taken as \
         they are.",
    ),
    OptionDef::new(
        AOS,
        "DEFAULT",
        "log_file",
        OPTIONAL_PATH,
        "",
        "Log file of the services that have no log file of their own. Empty: log to standard \
         error (the journal under systemd).",
    ),
    OptionDef::new(
        AOS,
        "DEFAULT",
        "shutdown_timeout",
        seconds(1),
        "30",
        "Time a service waits for in-flight work to finish after SIGTERM before it exits \
         anyway. It is measured in seconds.",
    ),
    OptionDef::new(
        AOS,
        "DEFAULT",
        "transport_url",
        K::TransportUrl { allow_empty: false },
        "rabbit://guest:guest@127.0.0.1:5672/",
        "RabbitMQ connection in oslo.messaging form rabbit://user:password@host:port/vhost \
         (amqp:// is accepted too). Several brokers may be listed: \
         rabbit://user:password@host1:5672,user:password@host2:5672/vhost. A path of / alone \
         means the virtual host /.",
    )
    .secret(),
    // [agent]
    OptionDef::new(
        CM,
        "agent",
        "agent_confirm_timeout",
        seconds(1),
        "10",
        "Maximum waiting time for confirmation of response from aos-agent service. It is \
         measured in seconds.",
    ),
    OptionDef::new(
        CM,
        "agent",
        "agent_response_timeout",
        seconds(1),
        "60",
        "Maximum time to wait for a response from aos-agent service. It is measured in seconds.",
    ),
    OptionDef::new(
        CM,
        "agent",
        "backoff_factor",
        K::Float { min: 0.0, max: 60.0 },
        "0.3",
        "Increasing wait time with each connection iteration: the factor of the exponential \
         back-off between attempts to reach aos-agent, in seconds.",
    ),
    OptionDef::new(
        CM,
        "agent",
        "controller_user",
        REQUIRED_TEXT,
        "aos-cloud-manager",
        "Node role: the RabbitMQ user of the controller agents. A node agent answers only \
         requests whose broker-validated user-id is this user (docs/adr/0012-agent.md).",
    ),
    OptionDef::new(
        CM,
        "agent",
        "enabled",
        K::Bool,
        "False",
        "Parameter for enabling or disabling the node management functionality provided by \
         Agent module.",
    ),
    OptionDef::new(
        CM,
        "agent",
        "heartbeat_interval",
        seconds(1),
        "5",
        "Node role: seconds between two heartbeats, and between two writes of the node's state \
         file to its availability storages.",
    ),
    OptionDef::new(
        CM,
        "agent",
        "heartbeat_stale_after",
        seconds(1),
        "15",
        "Controller role: a node agent whose last heartbeat was received longer ago than this \
         counts as silent (the node tracker's agent signal). Keep it a few heartbeat intervals.",
    ),
    OptionDef::new(
        CM,
        "agent",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to log file of aos-cloud-manager-agent service. Empty: the service logs as set in \
         [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "agent",
        "node_user_prefix",
        K::Text { allow_empty: true },
        "aos-agent-",
        "Controller role: node agent NAME must connect to RabbitMQ as user <prefix>NAME; \
         messages whose broker-validated user-id is not that user are dropped, so one node \
         cannot speak for another (docs/adr/0012-agent.md).",
    ),
    OptionDef::new(
        CM,
        "agent",
        "request_retries",
        integer(0, 20),
        "3",
        "Controller role: how many times a request to a node agent is sent again after a \
         missing confirm or response (waiting backoff_factor * 2^(n-1) seconds before retry n).",
    ),
    OptionDef::new(CM, "agent", "status_port", K::Port { min: 0 }, "9366", STATUS_PORT_HELP),
    OptionDef::new(
        CM,
        "agent",
        "storage_paths",
        K::PathList,
        "",
        "Node role: the availability storages mounted on this node (the paths bound to it with \
         `storage bind`); the agent writes the node's state file to each every \
         heartbeat_interval.",
    ),
    // [api]
    OptionDef::new(CM, "api", "audit_enabled", K::Bool, "True", "Flag enabling auditing of API requests."),
    OptionDef::new(
        CM,
        "api",
        "host",
        K::Host { allow_empty: true },
        "",
        "IP address where the CloudManager API service will run. Empty: all IPv4 interfaces \
         (0.0.0.0).",
    ),
    OptionDef::new(
        CM,
        "api",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to log file of aos-cloud-manager-api service. Empty: the service logs as set in \
         [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "api",
        "max_limit",
        integer(1, 100_000),
        "1000",
        "Largest number of items one list request returns; also the page size when the request \
         gives no limit.",
    ),
    OptionDef::new(
        CM,
        "api",
        "policy_file",
        OPTIONAL_PATH,
        "",
        "Policy file (JSON, oslo.policy rules such as \"role:admin\" or \"role:reader or \
         role:admin\"); rules it sets replace the built-in defaults, which \
         /etc/aos/policy.json documents. Empty: the built-in defaults only.",
    ),
    OptionDef::new(
        CM,
        "api",
        "port",
        K::Port { min: 0 },
        "9362",
        "Port where the CloudManager API service will run. 0 lets the system pick a free port \
         (for tests).",
    ),
    OptionDef::new(
        CM,
        "api",
        "token_cache_size",
        integer(1, 10_000_000),
        "10000",
        "Most validated Keystone tokens kept in memory; the least recently used is dropped first.",
    ),
    OptionDef::new(
        CM,
        "api",
        "token_cache_time",
        seconds(0),
        "300",
        "How long a token Keystone validated is trusted without asking again (never past its \
         expiry); a revoked token is refused at most this long after revocation. 0 asks Keystone \
         on every request. It is measured in seconds.",
    ),
    // [balancing]
    OptionDef::new(
        CM,
        "balancing",
        "approx",
        K::Float { min: 0.0, max: 1.0 },
        "0.1",
        "Balancing accuracy: a node is loaded when its share of used RAM exceeds the share of \
         used RAM of all balanced nodes plus approx.",
    ),
    OptionDef::new(
        CM,
        "balancing",
        "deny_hosts",
        K::TextList,
        "",
        "Hosts left out of balancing (comma-separated nova-compute host names): none of their \
         servers is moved and nothing is moved to them. A server is left where it is with the \
         metadata aos:balancing=deny.",
    ),
    OptionDef::new(
        CM,
        "balancing",
        "enabled",
        K::Bool,
        "False",
        "Parameter for enabling or disabling the nodes balancing.",
    ),
    OptionDef::new(
        CM,
        "balancing",
        "migration_retries",
        integer(0, 100),
        "3",
        "Number of attempts to migrate instances.",
    ),
    OptionDef::new(
        CM,
        "balancing",
        "periodic_time",
        K::Duration { unit: TimeUnit::Hours, min: 1 },
        "24",
        "Period between host aggregates balancing. It is measured in hours.",
    ),
    OptionDef::new(
        CM,
        "balancing",
        "vcpu_weight",
        K::Float { min: 0.0, max: 10.0 },
        "0.0",
        "Weight of the vCPU share in a host's load: load = (RAM share + vcpu_weight * vCPU \
         share) / (1 + vcpu_weight). 0 balances by RAM only, as the reference does; vCPU \
         capacity is never exceeded either way (docs/adr/0014-balancing.md).",
    ),
    // [beat]
    OptionDef::new(
        CM,
        "beat",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to log file of aos-cloud-manager-beat service. Empty: the service logs as set in \
         [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(CM, "beat", "status_port", K::Port { min: 0 }, "9364", STATUS_PORT_HELP),
    // [coordination]
    OptionDef::new(
        AOS,
        "coordination",
        "lease_renew_interval",
        seconds(1),
        "5",
        "Interval between renewals of a held lease; must be less than lease_ttl. It is \
         measured in seconds.",
    ),
    OptionDef::new(
        AOS,
        "coordination",
        "lease_ttl",
        seconds(3),
        "15",
        "Time a lease on a singleton job (such as the node tracker) stays valid without \
         renewal; after it expires, another instance takes the job over. It is measured in \
         seconds.",
    ),
    // [database]
    OptionDef::new(
        AOS,
        "database",
        "connect_timeout",
        seconds(1),
        "10",
        "Time to wait for a database connection. It is measured in seconds.",
    ),
    OptionDef::new(
        AOS,
        "database",
        "max_connections",
        integer(1, 1000),
        "10",
        "Maximum number of connections in each service's database pool.",
    ),
    OptionDef::new(
        CM,
        "database",
        "url",
        K::DatabaseUrl { allow_empty: false },
        "mysql+pymysql://aos:password@localhost:3306/cloud_manager?charset=utf8",
        "Setting up connection to database, in SQLAlchemy form: \
         mysql+pymysql://user:password@host:3306/database?charset=utf8 (mysql://, mariadb:// \
         and other mysql+driver:// schemes are accepted), sqlite:///relative/path, \
         sqlite:////absolute/path or sqlite:///:memory:.",
    )
    .secret(),
    // [drs]
    OptionDef::new(
        CM,
        "drs",
        "host",
        K::Host { allow_empty: true },
        "",
        "Host where DRS system is running. Empty: no DRS system is configured.",
    ),
    OptionDef::new(CM, "drs", "password", K::Text { allow_empty: true }, "", "User password of DRS system.").secret(),
    OptionDef::new(CM, "drs", "port", K::Port { min: 1 }, "80", "Server port with DRS system."),
    OptionDef::new(CM, "drs", "username", K::Text { allow_empty: true }, "", "User of DRS system."),
    // [drs_trigger]
    OptionDef::new(
        CM,
        "drs_trigger",
        "enabled",
        K::Bool,
        "True",
        "Parameter to enable automatic application of audit results.",
    ),
    OptionDef::new(
        CM,
        "drs_trigger",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to log file of audit results automatic application. Empty: the service logs as \
         set in [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "drs_trigger",
        "trigger_interval",
        seconds(1),
        "600",
        "Interval for starting automatic application of audit results. It is measured in \
         seconds.",
    ),
    // [extra_availability_check]
    OptionDef::new(
        CM,
        "extra_availability_check",
        "attempts",
        integer(1, 100),
        "2",
        "Number of attempts to read the file.",
    ),
    OptionDef::new(
        CM,
        "extra_availability_check",
        "delay",
        seconds(0),
        "60",
        "Delay in retrying to read the compute node state file. It is measured in seconds.",
    ),
    OptionDef::new(
        CM,
        "extra_availability_check",
        "enabled",
        K::Bool,
        "False",
        "Parameter to enable or disable additional checking for availability of compute nodes \
         through storage.",
    ),
    OptionDef::new(
        CM,
        "extra_availability_check",
        "instance_rate",
        integer(0, 100),
        "100",
        "Required percentage of running instances.",
    ),
    // [host_tasks]
    OptionDef::new(
        CM,
        "host_tasks",
        "allow_evacuate_host",
        K::Bool,
        "True",
        "This parameter enables or disables host evacuation.",
    ),
    OptionDef::new(
        CM,
        "host_tasks",
        "deny_evacuate",
        K::TextList,
        "",
        "This parameter disables evacuation for specified hosts (comma-separated host names).",
    ),
    OptionDef::new(
        CM,
        "host_tasks",
        "evacuation_retries",
        integer(0, 100),
        "2",
        "Number of attempts to evacuate instances.",
    ),
    OptionDef::new(
        CM,
        "host_tasks",
        "prioritized_evacuation_timeout",
        seconds(0),
        "60",
        "Interval between evacuating instance groups with the same recovery priorities. It is \
         measured in seconds.",
    ),
    OptionDef::new(
        CM,
        "host_tasks",
        "recovery_priority",
        integer(0, UNBOUNDED),
        "5",
        "Priority of restoration of the instance during auto evacuation in case of problems on \
         the hypervisor.",
    ),
    OptionDef::new(
        CM,
        "host_tasks",
        "retries_wait_for_node_state",
        integer(1, UNBOUNDED),
        "240",
        "Maximum number of state polling attempts hypervisors.",
    ),
    OptionDef::new(
        CM,
        "host_tasks",
        "retries_wait_for_vm_status",
        integer(1, UNBOUNDED),
        "60",
        "Maximum number of state polling attempts instances.",
    ),
    // [keystone_authtoken]
    OptionDef::new(
        AOS,
        "keystone_authtoken",
        "auth_url",
        K::HttpUrl,
        "http://127.0.0.1:5000/v3",
        "Keystone identity API endpoint used to obtain service tokens.",
    ),
    OptionDef::new(
        AOS,
        "keystone_authtoken",
        "interface",
        K::Choice { choices: &["public", "internal", "admin"] },
        "internal",
        "Endpoint interface picked from the service catalog for Nova and Placement.",
    ),
    OptionDef::new(
        AOS,
        "keystone_authtoken",
        "password",
        K::Text { allow_empty: true },
        "",
        "Password of the service user.",
    )
    .secret(),
    OptionDef::new(
        AOS,
        "keystone_authtoken",
        "project_domain_name",
        REQUIRED_TEXT,
        "Default",
        "Domain of the service user's project.",
    ),
    OptionDef::new(
        AOS,
        "keystone_authtoken",
        "project_name",
        REQUIRED_TEXT,
        "service",
        "Project the service user is scoped to.",
    ),
    OptionDef::new(
        AOS,
        "keystone_authtoken",
        "region_name",
        REQUIRED_TEXT,
        "RegionOne",
        "Region of the endpoints picked from the service catalog.",
    ),
    OptionDef::new(
        AOS,
        "keystone_authtoken",
        "user_domain_name",
        REQUIRED_TEXT,
        "Default",
        "Domain of the service user.",
    ),
    OptionDef::new(AOS, "keystone_authtoken", "username", REQUIRED_TEXT, "aos", "Name of the service user."),
    // [listener]
    OptionDef::new(
        CM,
        "listener",
        "durability",
        K::Bool,
        "True",
        "Durability of the listener's own RabbitMQ queue. Nova's notification exchange is used as Nova \
         declared it (created non-durable only when missing; docs/adr/0007-listener.md).",
    ),
    OptionDef::new(
        CM,
        "listener",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to log file of aos-cloud-manager-listener service. Empty: the service logs as set \
         in [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "listener",
        "notification_exchange",
        REQUIRED_TEXT,
        "nova",
        "Exchange on which Nova publishes its notifications.",
    ),
    OptionDef::new(
        CM,
        "listener",
        "notification_topic",
        REQUIRED_TEXT,
        "versioned_notifications",
        "Topic (routing key prefix) of Nova's notifications.",
    ),
    OptionDef::new(CM, "listener", "nova_rabbit_vhost", REQUIRED_TEXT, "/", "Nova RabbitMQ service virtual host."),
    OptionDef::new(
        CM,
        "listener",
        "nova_transport_url",
        K::TransportUrl { allow_empty: true },
        "",
        "RabbitMQ connection on which Nova publishes notifications, same form as [DEFAULT] \
         transport_url. Empty: [DEFAULT] transport_url with its virtual host replaced by \
         nova_rabbit_vhost.",
    )
    .secret(),
    OptionDef::new(
        CM,
        "listener",
        "queue_name",
        REQUIRED_TEXT,
        "aos-cloud-manager.notifications",
        "Queue the listener binds to Nova's notification exchange.",
    ),
    OptionDef::new(CM, "listener", "status_port", K::Port { min: 0 }, "9363", STATUS_PORT_HELP),
    // [node_sync]
    OptionDef::new(CM, "node_sync", "enabled", K::Bool, "True", "Parameter enabling synchronization of compute nodes."),
    OptionDef::new(
        CM,
        "node_sync",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to compute nodes synchronization log file. Empty: the service logs as set in \
         [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "node_sync",
        "reserve_interval",
        seconds(0),
        "60",
        "Waiting time before start of transfer of free hypervisor to reserve. It is measured in \
         seconds.",
    ),
    OptionDef::new(
        CM,
        "node_sync",
        "sync_interval",
        seconds(1),
        "60",
        "Compute nodes synchronization interval in seconds.",
    ),
    // [node_tracker]
    OptionDef::new(
        CM,
        "node_tracker",
        "allow_host_auto_power_off",
        K::Bool,
        "False",
        "Parameter enables or disables restarting compute node in case of its transition to the \
         down status.",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "enabled",
        K::Bool,
        "True",
        "Parameter that enables checking the status of compute nodes.",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "host_restart_timeout",
        seconds(1),
        "600",
        "Restart timeout compute node. It is measured in seconds.",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to log file check status of compute nodes. Empty: the service logs as set in \
         [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "loop_time",
        seconds(1),
        "30",
        "Time interval between checks of the status of compute nodes (in seconds).",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "max_down_hosts",
        integer(0, UNBOUNDED),
        "0",
        "Maximum allowed number of compute nodes in the down status, excluding standby ones. If \
         this number is exceeded, automatic evacuation is not performed for any of the nodes. \
         Negative numbers are not allowed.",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "mutex",
        integer(1, UNBOUNDED),
        "3",
        "Number of attempts to determine the status of the hypervisor when switching to the \
         down status before starting the handler.",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "mutex_up",
        integer(1, UNBOUNDED),
        "1",
        "Number of attempts to determine the status of the hypervisor when switching to up \
         status before starting the handler.",
    ),
    OptionDef::new(
        CM,
        "node_tracker",
        "timeout_reserv_node_up",
        K::Duration { unit: TimeUnit::Minutes, min: 1 },
        "15",
        "Waiting time for raising the standby compute node in minutes.",
    ),
    // [nova_database]
    OptionDef::new(
        CM,
        "nova_database",
        "url",
        K::DatabaseUrl { allow_empty: true },
        "",
        "Setting up connection to Nova's database, same forms as [database] url. Empty: not \
         configured.",
    )
    .secret(),
    // [power]
    OptionDef::new(
        CM,
        "power",
        "command_timeout",
        seconds(1),
        "20",
        "Overall time limit of one call to a power device (one ipmitool run, one Redfish \
         request, one SSH command template); the call is abandoned (the process killed) after \
         it and the operation fails as timed out. It is measured in seconds.",
    ),
    OptionDef::new(
        CM,
        "power",
        "credential_key_file",
        K::Path { allow_empty: false },
        "/etc/aos/power.key",
        "File holding the key that encrypts power device credentials in the database: 64 \
         hexadecimal digits (32 bytes), readable only by the service user (mode 0600). Create \
         it with `aos-cloud-manager power-device generate-key`.",
    ),
    OptionDef::new(
        CM,
        "power",
        "ipmi_retries",
        integer(0, 10),
        "1",
        "How many times ipmitool retransmits an unanswered IPMI request (its -R option). Keep \
         it low: some BMCs execute a retransmitted request twice.",
    ),
    OptionDef::new(
        CM,
        "power",
        "ipmi_retry_timeout",
        seconds(1),
        "2",
        "Seconds ipmitool waits for an answer before retransmitting (its -N option).",
    ),
    OptionDef::new(
        CM,
        "power",
        "poll_interval",
        seconds(1),
        "2",
        "Seconds between two reads of the power state while waiting for an action to take \
         effect.",
    ),
    OptionDef::new(
        CM,
        "power",
        "shutdown_interval",
        seconds(1),
        "30",
        "Waiting time until the next iteration starts when checking the status of the compute \
         node when the host is shut down with evacuation of virtual machines when the console \
         utility is powered off the hypervisor. It is measured in seconds.",
    ),
    OptionDef::new(
        CM,
        "power",
        "shutdown_max_tick",
        integer(1, UNBOUNDED),
        "10",
        "Maximum number of iterations for checking the status of a compute node when the host \
         is shutdown with evacuation of instances when the hypervisor is powered off by the \
         console utility.",
    ),
    OptionDef::new(
        CM,
        "power",
        "verify_timeout",
        seconds(1),
        "60",
        "How long the power state is polled after an action (power off for fencing, on, \
         reset) until it shows the expected state; past it the action fails as timed out. It \
         is measured in seconds.",
    ),
    // [pxe]
    OptionDef::new(
        CM,
        "pxe",
        "conf_dir",
        K::Path { allow_empty: false },
        "/var/lib/tftpboot/pxelinux.cfg/",
        "Directory for configuration files of PXE.",
    ),
    // [storage_sync]
    OptionDef::new(CM, "storage_sync", "enabled", K::Bool, "True", "Parameter to enable storage sync."),
    OptionDef::new(
        CM,
        "storage_sync",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to storages synchronization log file. Empty: the service logs as set in [DEFAULT] \
         (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "storage_sync",
        "sync_interval",
        seconds(1),
        "60",
        "Storage sync start interval. It is measured in seconds.",
    ),
    // [worker]
    OptionDef::new(
        CM,
        "worker",
        "concurrency",
        integer(1, 1024),
        "4",
        "Number of tasks one worker process runs at the same time.",
    ),
    OptionDef::new(
        CM,
        "worker",
        "logfile",
        OPTIONAL_PATH,
        "",
        "Path to log file of aos-cloud-manager-worker service. Empty: the service logs as set in \
         [DEFAULT] (log_dir, log_file).",
    ),
    OptionDef::new(
        CM,
        "worker",
        "queue_prefix",
        REQUIRED_TEXT,
        "aos-cloud-manager",
        "Prefix of the job queue names on the [DEFAULT] transport_url broker: <prefix>.jobs and its \
         dead-letter queue <prefix>.jobs.dead. Every worker and beat of one installation must use the \
         same value.",
    ),
    OptionDef::new(CM, "worker", "status_port", K::Port { min: 0 }, "9365", STATUS_PORT_HELP),
    OptionDef::new(
        AOS,
        "worker",
        "task_stale_after",
        seconds(3),
        "60",
        "A running task whose worker has not reported for this long is taken over by another worker \
         (its finished steps are not done again). Workers report every sixth of it. It is measured in \
         seconds.",
    ),
];

/// The definition of `[section] key`, if we know it.
pub fn find(section: &str, key: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|def| def.section == section && def.key == key)
}

/// Whether any option lives in `section`. Unknown sections are other modules' business.
pub fn is_known_section(section: &str) -> bool {
    OPTIONS.iter().any(|def| def.section == section)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGFILE_HELP_SUFFIX: &str = "Empty: the service logs as set in [DEFAULT] (log_dir, log_file).";

    #[test]
    fn rows_are_sorted_with_default_first_and_unique() {
        let order = |def: &OptionDef| (def.section != "DEFAULT", def.section, def.key);
        for pair in OPTIONS.windows(2) {
            assert!(
                order(&pair[0]) < order(&pair[1]),
                "[{}] {} must come before [{}] {}",
                pair[1].section,
                pair[1].key,
                pair[0].section,
                pair[0].key
            );
        }
    }

    #[test]
    fn helps_are_sentences_without_trailing_space() {
        for def in OPTIONS {
            assert!(def.help.ends_with('.'), "[{}] {}: help must end with '.'", def.section, def.key);
            assert!(!def.help.contains("  "), "[{}] {}: double space in help", def.section, def.key);
        }
    }

    #[test]
    fn logfile_helps_share_one_wording() {
        for def in OPTIONS.iter().filter(|def| def.key == "logfile") {
            assert!(def.help.ends_with(LOGFILE_HELP_SUFFIX), "[{}] logfile", def.section);
        }
    }

    #[test]
    fn describe_shows_type_and_range() {
        assert_eq!(integer(0, UNBOUNDED).describe(), "integer, >= 0");
        assert_eq!(integer(0, 100).describe(), "integer, 0 to 100");
        assert_eq!(seconds(1).describe(), "integer seconds, >= 1");
        assert_eq!(K::Float { min: 0.0, max: 1.0 }.describe(), "floating point, 0 to 1");
        assert_eq!(K::Port { min: 0 }.describe(), "port, 0 to 65535");
    }
}
