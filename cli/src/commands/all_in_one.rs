//! `all-in-one`: the five roles in one process, for a single-node install and for trying the
//! suite. Unless `[database] url` is set in a file, the database is a SQLite file in
//! `--data-dir`, migrated to the latest schema at start (an embedded install has no separate
//! upgrade step). Jobs use the embedded queue, so no RabbitMQ is needed for our own work; the
//! listener still connects to Nova's broker and reports it in readiness when it cannot.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aos_config::{Config, DatabaseUrl, OptionSource};
use aos_daemon::{CommonArgs, DaemonContext, ShutdownToken};

#[derive(clap::Args)]
pub struct AllInOneArgs {
    /// Directory for the embedded SQLite database (used when `[database] url` is not set).
    #[arg(long = "data-dir", default_value = "aos-data")]
    data_dir: PathBuf,
    /// Port of the API (overrides `[api] port`; 0 picks a free one).
    #[arg(long = "api-port")]
    api_port: Option<u16>,
    /// Stop by itself after this many seconds (smoke tests, demos); runs until SIGTERM/SIGINT otherwise.
    #[arg(long = "run-for", value_name = "SECONDS")]
    run_for: Option<u64>,
}

pub fn run(common: &CommonArgs, args: AllInOneArgs) -> anyhow::Result<ExitCode> {
    let loaded = common.load()?;
    let database_url_set = loaded
        .effective_options()
        .iter()
        .any(|option| option.section == "database" && option.key == "url" && option.source != OptionSource::Default);
    let mut config = loaded.config.clone();
    if !database_url_set {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
        let path = std::path::absolute(args.data_dir.join("cloud_manager.sqlite"))?;
        config.database.url = DatabaseUrl::SqliteFile(path);
    }
    if let Some(port) = args.api_port {
        config.api.port = port;
    }
    if config.api.host.is_empty() {
        // A single-node trial should not listen on every interface unless told to.
        config.api.host = "127.0.0.1".to_owned();
    }
    // One process: the API's /readyz is the status endpoint; no per-role ports.
    config.listener.status_port = None;
    config.beat.status_port = None;
    config.worker.status_port = None;
    config.agent.status_port = None;
    let destination = aos_daemon::logging::log_destination(
        None,
        config.default.log_file.as_deref(),
        config.default.log_dir.as_deref(),
    );
    let _log_guard = aos_daemon::logging::init_logging(destination.as_deref(), config.default.debug)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_all(Arc::new(config), args.run_for))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}

async fn run_all(config: Arc<Config>, run_for: Option<u64>) -> anyhow::Result<()> {
    let shutdown = aos_daemon::shutdown_on_signals();
    if let Some(seconds) = run_for {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            tracing::info!(seconds, "--run-for elapsed: stopping");
            stop.cancel();
        });
    }
    {
        let db = super::connect(&config).await?;
        let outcome = aos_db::migrate_to(&db, None).await?;
        if outcome.from != outcome.to {
            tracing::info!(from = outcome.from, to = outcome.to, "embedded database migrated");
        }
    }
    tracing::info!(database = %config.database.url.masked(), api_port = config.api.port, "all-in-one starting: api, listener, beat, worker, agent");
    let results = tokio::join!(
        role(aos_api::ROLE, &config, &shutdown, aos_api::run),
        role(aos_listener::ROLE, &config, &shutdown, aos_listener::run),
        role(aos_beat::ROLE, &config, &shutdown, aos_beat::run),
        role(aos_worker::ROLE, &config, &shutdown, aos_worker::run),
        role(aos_agent::ROLE, &config, &shutdown, aos_agent::run),
    );
    let mut failed = Vec::new();
    for (name, result) in [
        (aos_api::ROLE, results.0),
        (aos_listener::ROLE, results.1),
        (aos_beat::ROLE, results.2),
        (aos_worker::ROLE, results.3),
        (aos_agent::ROLE, results.4),
    ] {
        if let Err(error) = result {
            tracing::error!(role = name, "{error:#}");
            failed.push(name);
        }
    }
    anyhow::ensure!(failed.is_empty(), "roles failed: {}", failed.join(", "));
    tracing::info!("all-in-one stopped");
    Ok(())
}

/// Runs one role; a role that fails stops the others (a half-running node is worse than none).
async fn role<F, Fut>(name: &'static str, config: &Arc<Config>, shutdown: &ShutdownToken, run: F) -> anyhow::Result<()>
where
    F: FnOnce(DaemonContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let result = async {
        let context = DaemonContext::connect(name, config.clone(), shutdown.clone()).await?;
        aos_daemon::startup::run_registered(context, run).await
    }
    .await;
    if result.is_err() {
        shutdown.cancel();
    }
    result
}
