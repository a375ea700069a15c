//! `aos-config`: the oslo.config-style ini configuration of aos-cloud-manager.
//!
//! Files and precedence (lowest first), as oslo.config layers them: built-in defaults,
//! `/etc/aos/aos.conf`, `/etc/aos/cloud_manager.conf` (both optional, read when
//! [`LoadOptions::default_files`] is set), each `--config-file` in order, then the `*.conf`
//! files of each `--config-dir` in lexical order. Later values win.
//!
//! Where options belong: `aos.conf` holds what every AccentOS module on a host shares (logging,
//! the RabbitMQ `transport_url`, the instance `host` name, `shutdown_timeout`,
//! `[keystone_authtoken]`, database pool tuning, `[coordination]`); `cloud_manager.conf` holds
//! everything only CloudManager reads, including `[DEFAULT] dhcp_leases` and the `[database]`
//! and `[nova_database]` URLs, where the reference product keeps them (each module has its own
//! database). Any option may be set in either file; the rule decides which example documents it
//! ([`definitions::ExampleFile`]).
//!
//! Flow: `raw` reads files into assignments with provenance; `validate` checks each against its
//! row in `definitions` (type, range) and collects every problem into one [`ConfigError`];
//! `sections` builds the typed [`Config`]. Unknown keys in our sections are returned as
//! [`ConfigWarning`]s; unknown sections belong to other modules and are ignored. Secrets are
//! [`Secret`]s and are masked in `Debug`, errors and [`Loaded::effective_options`].
//!
//! Module map: `definitions` (the option table), `raw` (files, ini, layering), `validate`
//! (raw to typed values, problems, warnings), `sections` (typed structs), `urls` (database and
//! transport URLs), `example` (example files), `error`, `secret`.

pub mod definitions;
mod error;
mod example;
mod raw;
mod secret;
mod sections;
mod urls;
mod validate;

use std::path::{Path, PathBuf};

pub use definitions::ExampleFile;
pub use error::{ConfigError, ConfigProblem, ConfigWarning, OptionSource};
pub use example::render_example;
pub use secret::Secret;
pub use sections::*;
pub use urls::{DatabaseUrl, MysqlUrl, TransportUrl, UrlError};
pub use validate::EffectiveOption;

/// The system configuration files, read in this order when [`LoadOptions::default_files`] is
/// set and the file exists.
pub const DEFAULT_CONFIG_FILES: [&str; 2] = ["/etc/aos/aos.conf", "/etc/aos/cloud_manager.conf"];

/// Which files to read; mirrors oslo.config's `--config-file` / `--config-dir` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Read in order after the default files; each must exist.
    pub config_files: Vec<PathBuf>,
    /// Their `*.conf` files are read last, in lexical order; each directory must exist.
    pub config_dirs: Vec<PathBuf>,
    /// Also read [`DEFAULT_CONFIG_FILES`] (first, and only those that exist).
    pub default_files: bool,
}

impl LoadOptions {
    /// What a daemon started without arguments reads: the system files only.
    pub fn system() -> Self {
        Self { default_files: true, ..Self::default() }
    }
}

/// A validated configuration and what was learned while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Worth logging once at start-up; none of them stops it.
    pub warnings: Vec<ConfigWarning>,
    files_read: Vec<PathBuf>,
    effective: Vec<EffectiveOption>,
}

impl Loaded {
    /// Every known option in table order with its effective value (secrets masked) and where
    /// that value comes from; what `config show` prints.
    pub fn effective_options(&self) -> Vec<EffectiveOption> {
        self.effective.clone()
    }

    /// The files that were read, in layering order.
    pub fn files_read(&self) -> &[PathBuf] {
        &self.files_read
    }
}

/// Reads, layers and validates the configuration files named by `options`.
pub fn load(options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let default_files = DEFAULT_CONFIG_FILES.map(Path::new);
    let raw = raw::read_layered(options, &default_files).map_err(ConfigError::new)?;
    finish(&raw)
}

/// Validates ini texts given as `(pseudo path, text)` pairs in layering order, without touching
/// the filesystem; the pseudo paths appear in messages and provenance. For tests and tools.
pub fn load_from_str(contents: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let sources = contents.iter().map(|(path, text)| (PathBuf::from(path), (*text).to_owned())).collect();
    let raw = raw::RawConfig::from_sources(sources).map_err(ConfigError::new)?;
    finish(&raw)
}

fn finish(raw: &raw::RawConfig) -> Result<Loaded, ConfigError> {
    let validated = validate::validate(raw)?;
    Ok(Loaded {
        config: validated.config,
        warnings: validated.warnings,
        files_read: raw.files_read().to_vec(),
        effective: validated.effective,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn error_lines(contents: &[(&str, &str)]) -> Vec<String> {
        load_from_str(contents).unwrap_err().to_string().lines().map(str::to_owned).collect()
    }

    /// The reference product's configuration table, transcribed by hand: every one of these
    /// must exist with exactly this default.
    #[test]
    fn every_reference_option_exists_with_its_reference_default() {
        let reference = [
            ("DEFAULT", "dhcp_leases", "/var/lib/dhcp/dhcpd/state/dhcpd.leases, /var/lib/dhcp/dhcpd.leases"),
            ("agent", "agent_confirm_timeout", "10"),
            ("agent", "agent_response_timeout", "60"),
            ("agent", "backoff_factor", "0.3"),
            ("agent", "enabled", "False"),
            ("agent", "logfile", ""),
            ("api", "audit_enabled", "True"),
            ("api", "host", ""),
            ("api", "logfile", ""),
            ("api", "port", "9362"),
            ("balancing", "approx", "0.1"),
            ("balancing", "enabled", "False"),
            ("balancing", "migration_retries", "3"),
            ("balancing", "periodic_time", "24"),
            ("database", "url", "mysql+pymysql://aos:password@localhost:3306/cloud_manager?charset=utf8"),
            ("drs", "host", ""),
            ("drs", "password", ""),
            ("drs", "port", "80"),
            ("drs", "username", ""),
            ("drs_trigger", "enabled", "True"),
            ("drs_trigger", "logfile", ""),
            ("drs_trigger", "trigger_interval", "600"),
            ("extra_availability_check", "attempts", "2"),
            ("extra_availability_check", "delay", "60"),
            ("extra_availability_check", "enabled", "False"),
            ("extra_availability_check", "instance_rate", "100"),
            ("host_tasks", "allow_evacuate_host", "True"),
            ("host_tasks", "deny_evacuate", ""),
            ("host_tasks", "evacuation_retries", "2"),
            ("host_tasks", "prioritized_evacuation_timeout", "60"),
            ("host_tasks", "recovery_priority", "5"),
            ("host_tasks", "retries_wait_for_node_state", "240"),
            ("host_tasks", "retries_wait_for_vm_status", "60"),
            ("listener", "durability", "True"),
            ("listener", "logfile", ""),
            ("listener", "nova_rabbit_vhost", "/"),
            ("node_sync", "enabled", "True"),
            ("node_sync", "logfile", ""),
            ("node_sync", "reserve_interval", "60"),
            ("node_sync", "sync_interval", "60"),
            ("node_tracker", "allow_host_auto_power_off", "False"),
            ("node_tracker", "enabled", "True"),
            ("node_tracker", "host_restart_timeout", "600"),
            ("node_tracker", "logfile", ""),
            ("node_tracker", "loop_time", "30"),
            ("node_tracker", "max_down_hosts", "0"),
            ("node_tracker", "mutex", "3"),
            ("node_tracker", "mutex_up", "1"),
            ("node_tracker", "timeout_reserv_node_up", "15"),
            ("nova_database", "url", ""),
            ("power", "shutdown_interval", "30"),
            ("power", "shutdown_max_tick", "10"),
            ("pxe", "conf_dir", "/var/lib/tftpboot/pxelinux.cfg/"),
            ("storage_sync", "enabled", "True"),
            ("storage_sync", "logfile", ""),
            ("storage_sync", "sync_interval", "60"),
        ];
        for (section, key, default) in reference {
            let def = definitions::find(section, key).unwrap_or_else(|| panic!("[{section}] {key} is not defined"));
            assert_eq!(def.default, default, "[{section}] {key}");
        }
        let loaded = load_from_str(&[]).unwrap();
        let shown: Vec<(&str, &str)> =
            loaded.effective_options().iter().map(|option| (option.section, option.key)).collect();
        for (section, key, _) in reference {
            assert!(shown.contains(&(section, key)), "[{section}] {key} missing from effective options");
        }
    }

    #[test]
    fn defaults_give_the_documented_typed_values() {
        let config = Config::from_defaults();
        assert_eq!(config.node_tracker.loop_time, Duration::from_secs(30));
        assert_eq!(config.node_tracker.max_down_hosts, 0);
        assert_eq!(config.node_tracker.timeout_reserv_node_up, Duration::from_secs(15 * 60));
        assert_eq!(config.balancing.periodic_time, Duration::from_secs(24 * 3600));
        assert_eq!(config.balancing.approx, 0.1);
        assert_eq!(config.agent.backoff_factor, 0.3);
        assert_eq!(
            config.default.dhcp_leases,
            [PathBuf::from("/var/lib/dhcp/dhcpd/state/dhcpd.leases"), PathBuf::from("/var/lib/dhcp/dhcpd.leases")]
        );
        assert_eq!(config.pxe.conf_dir, PathBuf::from("/var/lib/tftpboot/pxelinux.cfg/"));
        assert_eq!(config.nova_database.url, None);
        assert_eq!(config.api.bind_address(), "0.0.0.0:9362");
        assert_eq!(
            (config.listener.status_port, config.beat.status_port, config.worker.status_port, config.agent.status_port),
            (Some(9363), Some(9364), Some(9365), Some(9366))
        );
        assert!(!config.default.host.is_empty(), "an empty host resolves to the machine's hostname");
        assert_eq!(config.default.transport_url.to_amqp_uri(), "amqp://guest:guest@127.0.0.1:5672/%2F");
        assert_eq!(config.listener.nova_transport_url.to_amqp_uri(), "amqp://guest:guest@127.0.0.1:5672/%2F");
        assert_eq!(config.keystone_authtoken.interface, EndpointInterface::Internal);
        assert_eq!(config.keystone_authtoken.auth_url.as_str(), "http://127.0.0.1:5000/v3");
        assert_eq!(config.database.url.to_sqlx_url(), "mysql://aos:password@localhost:3306/cloud_manager?charset=utf8");
        assert!(load_from_str(&[]).unwrap().warnings.is_empty());
    }

    #[test]
    fn later_files_override_earlier_ones_option_by_option() {
        let loaded = load_from_str(&[
            ("/etc/aos/aos.conf", "[DEFAULT]\ndebug = true\nhost = ctl-1\n[node_tracker]\nloop_time = 10\n"),
            ("/etc/aos/cloud_manager.conf", "[node_tracker]\nloop_time = 20\n"),
        ])
        .unwrap();
        assert!(loaded.config.default.debug);
        assert_eq!(loaded.config.default.host, "ctl-1");
        assert_eq!(loaded.config.node_tracker.loop_time, Duration::from_secs(20));
        let source = |key| {
            loaded.effective_options().into_iter().find(|option| option.key == key).map(|option| option.source).unwrap()
        };
        assert_eq!(source("loop_time"), OptionSource::File("/etc/aos/cloud_manager.conf".into()));
        assert_eq!(source("debug"), OptionSource::File("/etc/aos/aos.conf".into()));
        assert_eq!(source("mutex"), OptionSource::Default);
        assert_eq!(
            loaded.files_read(),
            [PathBuf::from("/etc/aos/aos.conf"), PathBuf::from("/etc/aos/cloud_manager.conf")]
        );
    }

    #[test]
    fn load_reads_files_then_config_dir_in_lexical_order() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("main.conf");
        std::fs::write(&file, "[node_tracker]\nloop_time = 10\nmutex = 5\nmutex_up = 2\n").unwrap();
        let dir = temp.path().join("conf.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("20-late.conf"), "[node_tracker]\nloop_time = 30\n").unwrap();
        std::fs::write(dir.join("10-early.conf"), "[node_tracker]\nloop_time = 20\nmutex = 7\n").unwrap();
        std::fs::write(dir.join("99-ignored.txt"), "[node_tracker]\nloop_time = 99\n").unwrap();
        let loaded = load(&LoadOptions {
            config_files: vec![file.clone()],
            config_dirs: vec![dir.clone()],
            default_files: false,
        })
        .unwrap();
        let tracker = &loaded.config.node_tracker;
        assert_eq!((tracker.loop_time, tracker.mutex, tracker.mutex_up), (Duration::from_secs(30), 7, 2));
        assert_eq!(loaded.files_read(), [file, dir.join("10-early.conf"), dir.join("20-late.conf")]);
    }

    #[test]
    fn missing_config_file_is_an_error_naming_it() {
        let error = load(&LoadOptions { config_files: vec!["/nonexistent/cm.conf".into()], ..LoadOptions::default() })
            .unwrap_err();
        assert_eq!(error.to_string(), "/nonexistent/cm.conf: config file not found");
    }

    #[test]
    fn bad_values_are_reported_together_with_file_section_key_and_reason() {
        let lines = error_lines(&[
            ("/etc/aos/aos.conf", "[node_tracker]\nmutex = 0\n"),
            ("/etc/aos/cloud_manager.conf", "[node_tracker]\nmax_down_hosts = -1\nloop_time = abc\n"),
        ]);
        assert_eq!(
            lines,
            [
                "/etc/aos/cloud_manager.conf: [node_tracker] loop_time = abc: not an integer",
                "/etc/aos/cloud_manager.conf: [node_tracker] max_down_hosts = -1: must be >= 0 (negative values are not allowed)",
                "/etc/aos/aos.conf: [node_tracker] mutex = 0: must be >= 1",
            ]
        );
    }

    #[test]
    fn problems_of_different_kinds_are_all_reported() {
        let lines = error_lines(&[(
            "cm.conf",
            "[balancing]\napprox = 2\n[extra_availability_check]\ninstance_rate = 150\n[api]\nport = 70000\n\
             [DEFAULT]\ntransport_url = kafka://h/\n[database]\nurl = postgresql://aos:hunter2@db/cm\n",
        )]);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines.iter().any(|line| line == "cm.conf: [balancing] approx = 2: must be <= 1"));
        assert!(lines.iter().any(|line| {
            line.starts_with("cm.conf: [database] url = postgresql://aos:***@db/cm: unsupported database scheme")
        }));
        assert!(!lines.join("\n").contains("hunter2"));
    }

    #[test]
    fn lease_renew_interval_must_be_shorter_than_lease_ttl() {
        let lines = error_lines(&[
            ("a.conf", "[coordination]\nlease_ttl = 10\n"),
            ("b.conf", "[coordination]\nlease_renew_interval = 10\n"),
        ]);
        assert_eq!(
            lines,
            [
                "b.conf: [coordination] lease_renew_interval = 10: must be less than [coordination] lease_ttl (10, from a.conf)"
            ]
        );
        // A lease_ttl that is itself invalid is reported alone, not compared.
        let lines = error_lines(&[("a.conf", "[coordination]\nlease_ttl = 2\nlease_renew_interval = 5\n")]);
        assert_eq!(lines, ["a.conf: [coordination] lease_ttl = 2: must be >= 3"]);
        assert!(load_from_str(&[("a.conf", "[coordination]\nlease_ttl = 6\nlease_renew_interval = 5\n")]).is_ok());
    }

    #[test]
    fn unknown_key_in_a_known_section_is_a_warning() {
        let loaded = load_from_str(&[("cm.conf", "[node_tracker]\nloop_tmie = 10\n")]).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(
            loaded.warnings[0].to_string(),
            "cm.conf: [node_tracker] loop_tmie: unknown option in [node_tracker], ignored"
        );
        assert_eq!(loaded.config.node_tracker.loop_time, Duration::from_secs(30));
    }

    #[test]
    fn unknown_sections_belong_to_other_modules_and_are_silent() {
        let loaded = load_from_str(&[(
            "aos.conf",
            "[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 60\n[Node_Tracker]\nx = 1\n",
        )])
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn ignored_url_parts_are_warnings_naming_the_key() {
        let loaded =
            load_from_str(&[("cm.conf", "[database]\nurl = mysql+pymysql://a:b@h/cm?charset=utf8&ssl_ca=/x.pem\n")])
                .unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        let warning = loaded.warnings[0].to_string();
        assert!(warning.starts_with("cm.conf: [database] url: query parameter `ssl_ca`"), "{warning}");
    }

    #[test]
    fn database_urls_of_both_sections_are_typed() {
        let loaded = load_from_str(&[(
            "cm.conf",
            "[database]\nurl = sqlite:////var/lib/aos/cm.db\n[nova_database]\nurl = mysql://nova:pw@ctl/nova\n",
        )])
        .unwrap();
        assert_eq!(loaded.config.database.url, DatabaseUrl::SqliteFile("/var/lib/aos/cm.db".into()));
        assert_eq!(loaded.config.nova_database.url.unwrap().to_sqlx_url(), "mysql://nova:pw@ctl:3306/nova");
    }

    #[test]
    fn nova_transport_url_defaults_to_the_common_broker_on_novas_vhost() {
        let loaded = load_from_str(&[(
            "cm.conf",
            "[DEFAULT]\ntransport_url = rabbit://aos:pw@ctl1:5672,aos:pw@ctl2:5672/aos\n[listener]\nnova_rabbit_vhost = nova\n",
        )])
        .unwrap();
        let nova = &loaded.config.listener.nova_transport_url;
        assert_eq!(nova.virtual_host, "nova");
        assert_eq!(nova.hosts.len(), 2);
        assert_eq!(loaded.config.default.transport_url.virtual_host, "aos");

        let explicit =
            load_from_str(&[("cm.conf", "[listener]\nnova_transport_url = rabbit://nova:pw@nova-mq:5672/\n")]).unwrap();
        assert_eq!(explicit.config.listener.nova_transport_url.to_amqp_uri(), "amqp://nova:pw@nova-mq:5672/%2F");
    }

    #[test]
    fn zero_status_port_disables_the_endpoint() {
        let loaded = load_from_str(&[("cm.conf", "[worker]\nstatus_port = 0\nconcurrency = 8\n")]).unwrap();
        assert_eq!(
            loaded.config.worker,
            WorkerSection {
                concurrency: 8,
                logfile: None,
                queue_prefix: "aos-cloud-manager".into(),
                status_port: None,
                task_stale_after: std::time::Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn secrets_never_appear_in_effective_options_or_debug_output() {
        let loaded = load_from_str(&[(
            "cm.conf",
            "[DEFAULT]\ntransport_url = rabbit://aos:pw-transport@ctl:5672/\n\
             [listener]\nnova_transport_url = rabbit://nova:pw-nova@ctl:5672/nova\n\
             [database]\nurl = mysql+pymysql://aos:pw-database@db/cm\n\
             [nova_database]\nurl = mysql://nova:pw-novadb@db/nova\n\
             [keystone_authtoken]\npassword = pw-keystone\n\
             [drs]\npassword = pw-drs\n",
        )])
        .unwrap();
        let shown = format!("{:?}\n{:?}", loaded.effective_options(), loaded);
        for secret in ["pw-transport", "pw-nova", "pw-database", "pw-novadb", "pw-keystone", "pw-drs"] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        let value = |section: &str, key: &str| {
            loaded
                .effective_options()
                .into_iter()
                .find(|option| option.section == section && option.key == key)
                .unwrap()
                .value
        };
        assert_eq!(value("database", "url"), "mysql+pymysql://aos:***@db/cm");
        assert_eq!(value("keystone_authtoken", "password"), "***");
        assert_eq!(loaded.config.keystone_authtoken.password.expose(), "pw-keystone");
        assert_eq!(loaded.config.drs.password.expose(), "pw-drs");
    }

    #[test]
    fn effective_options_list_every_option_in_table_order() {
        let options = load_from_str(&[]).unwrap().effective_options();
        assert_eq!(options.len(), definitions::OPTIONS.len());
        for (option, def) in options.iter().zip(definitions::OPTIONS) {
            assert_eq!((option.section, option.key), (def.section, def.key));
            assert_eq!(option.source, OptionSource::Default);
        }
    }
}
