//! Start-up shared by the five daemons: arguments, configuration, logging, runtime, database
//! connection and schema check, service registration, and the shutdown deadline around the
//! daemon's own `run`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aos_config::{Config, LoadOptions, Loaded};

use crate::readiness::{CheckState, Readiness};
use crate::shutdown::{ShutdownToken, shutdown_on_signals};
use crate::{logging, registry, systemd};

/// Command-line options every daemon (and the admin CLI) accepts, named as in oslo.config.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// Configuration file to read after /etc/aos/aos.conf and /etc/aos/cloud_manager.conf;
    /// may be repeated, later files win.
    #[arg(long = "config-file", value_name = "PATH", global = true)]
    pub config_file: Vec<PathBuf>,
    /// Directory whose *.conf files are read (in name order) after every --config-file.
    #[arg(long = "config-dir", value_name = "DIR", global = true)]
    pub config_dir: Vec<PathBuf>,
    /// Do not read /etc/aos/aos.conf and /etc/aos/cloud_manager.conf (tests, side-by-side installs).
    #[arg(long = "no-default-config-files", global = true)]
    pub no_default_config_files: bool,
}

impl CommonArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            config_files: self.config_file.clone(),
            config_dirs: self.config_dir.clone(),
            default_files: !self.no_default_config_files,
        }
    }

    /// Loads and validates the configuration; errors already name file, section and key.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        aos_config::load(&self.load_options()).map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))
    }
}

/// Everything a daemon's `run` gets: validated configuration, database, readiness table, its
/// identity, and the shutdown token.
#[derive(Clone)]
pub struct DaemonContext {
    pub role: &'static str,
    pub config: Arc<Config>,
    pub db: aos_db::DatabaseConnection,
    pub readiness: Readiness,
    /// Unique per process across controllers: `host:pid:random`, used as lease holder.
    pub identity: String,
    pub host: String,
    pub shutdown: ShutdownToken,
}

impl DaemonContext {
    /// Connects to the database (retrying until it answers or shutdown), refuses a schema that
    /// is not current with the exact command to fix it, and records the database check.
    pub async fn connect(role: &'static str, config: Arc<Config>, shutdown: ShutdownToken) -> anyhow::Result<Self> {
        let readiness = Readiness::new(role);
        readiness.set("database", CheckState::Pending);
        let db = connect_database(&config, &readiness, &shutdown).await?;
        ensure_schema_current(&db).await?;
        readiness.set("database", CheckState::Ok);
        crate::metrics::install();
        crate::metrics::set_database(db.clone());
        let host = instance_host(&config);
        let identity = format!("{host}:{}:{}", std::process::id(), short_random());
        Ok(Self { role, config, db, readiness, identity, host, shutdown })
    }
}

async fn connect_database(
    config: &Config,
    readiness: &Readiness,
    shutdown: &ShutdownToken,
) -> anyhow::Result<aos_db::DatabaseConnection> {
    let url = config.database.url.to_sqlx_url();
    let mut delay = Duration::from_millis(500);
    loop {
        match aos_db::connect(&url, config.database.max_connections, config.database.connect_timeout).await {
            Ok(db) => return Ok(db),
            Err(error) => {
                readiness.set("database", CheckState::Failing(error.to_string()));
                tracing::warn!(%error, retry_in = ?delay, "database unreachable");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("shutdown requested before the database answered"),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Refuses to run on a schema that is behind or ahead of this build.
pub async fn ensure_schema_current(db: &aos_db::DatabaseConnection) -> anyhow::Result<()> {
    match aos_db::schema_status(db).await.context("cannot read the schema version")? {
        aos_db::SchemaStatus::Current => Ok(()),
        aos_db::SchemaStatus::Behind { current, latest } => anyhow::bail!(
            "database schema is at version {current}, this build needs {latest}: run `aos-cloud-manager db migrate` (with the same --config-file options) first"
        ),
        aos_db::SchemaStatus::Ahead { current, latest } => anyhow::bail!(
            "database schema is at version {current}, newer than this build knows ({latest}): upgrade this controller's packages, or roll the schema back with `aos-cloud-manager db migrate --migration {latest}`"
        ),
    }
}

fn instance_host(config: &Config) -> String {
    if !config.default.host.is_empty() {
        return config.default.host.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn short_random() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{:08x}", hasher.finish() as u32)
}

/// Installs the process-wide rustls provider. With our dependency set both `ring` and
/// `aws-lc-rs` may be compiled in and rustls then refuses to pick one (FACTS.md).
pub fn install_crypto_provider() {
    // An Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The whole life of a daemon process: config → logging → runtime → connect → register →
/// `run` → ordered shutdown within `[DEFAULT] shutdown_timeout`. Returns the exit code.
pub fn main_entry<F, Fut>(
    role: &'static str,
    args: &CommonArgs,
    service_logfile: fn(&Config) -> Option<&Path>,
    run: F,
) -> ExitCode
where
    F: FnOnce(DaemonContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    install_crypto_provider();
    let loaded = match args.load() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("aos-cloud-manager-{role}: {error:#}");
            return ExitCode::from(2);
        }
    };
    let config = Arc::new(loaded.config.clone());
    let destination = logging::log_destination(
        service_logfile(&config),
        config.default.log_file.as_deref(),
        config.default.log_dir.as_deref(),
    );
    let _log_guard = match logging::init_logging(destination.as_deref(), config.default.debug) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("aos-cloud-manager-{role}: {error:#}");
            return ExitCode::from(2);
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let shutdown = shutdown_on_signals();
        let context = DaemonContext::connect(role, config.clone(), shutdown.clone()).await?;
        run_registered(context, run).await
    });
    // Do not let a stuck blocking task hold the process past the deadline.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(()) => {
            tracing::info!(role, "stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(role, "{error:#}");
            eprintln!("aos-cloud-manager-{role}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Registers the instance, notifies systemd, runs the daemon, and enforces the shutdown
/// deadline: once the token is cancelled, `run` has `[DEFAULT] shutdown_timeout` to return.
pub async fn run_registered<F, Fut>(context: DaemonContext, run: F) -> anyhow::Result<()>
where
    F: FnOnce(DaemonContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let role = context.role;
    let shutdown = context.shutdown.clone();
    let deadline = context.config.default.shutdown_timeout;
    let heartbeat = registry::spawn_heartbeat(&context).await?;
    systemd::notify_ready();
    systemd::notify_status(&format!("{role} running as {}", context.identity));
    let db = context.db.clone();
    let daemon = run(context);
    tokio::pin!(daemon);
    let result = tokio::select! {
        result = &mut daemon => result,
        _ = shutdown.cancelled() => {
            systemd::notify_stopping();
            match tokio::time::timeout(deadline, &mut daemon).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::error!(role, deadline = ?deadline, "shutdown deadline passed; abandoning in-flight work (it stays recorded and will be resumed)");
                    Ok(())
                }
            }
        }
    };
    shutdown.cancel();
    systemd::notify_stopping();
    heartbeat.stop().await;
    db.close().await.ok();
    result
}
