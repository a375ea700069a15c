//! Thin entry point: arguments, then either the shared daemon life (`--role controller`, in
//! `aos_daemon::main_entry`, with the database) or the node role's own, database-free life.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// aos-cloud-manager agent daemon.
#[derive(Parser)]
#[command(name = "aos-cloud-manager-agent", version)]
struct Args {
    /// `controller` on the controllers (records heartbeats, holds the `agent` lease, needs the
    /// database); `node` on every hypervisor (heartbeats, state files, answers requests; uses
    /// only RabbitMQ).
    #[arg(long, value_enum, default_value = "controller")]
    role: Role,
    #[command(flatten)]
    common: aos_daemon::CommonArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Controller,
    Node,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.role {
        Role::Controller => aos_daemon::main_entry(aos_agent::ROLE, &args.common, aos_agent::logfile, aos_agent::run),
        Role::Node => node_main(&args.common),
    }
}

/// The node role: configuration, logging, runtime, signals, status endpoint, and
/// [`aos_agent::run_node`] with the `[DEFAULT] shutdown_timeout` deadline. No database.
fn node_main(common: &aos_daemon::CommonArgs) -> ExitCode {
    const NAME: &str = "aos-cloud-manager-agent --role node";
    aos_daemon::startup::install_crypto_provider();
    let loaded = match common.load() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{NAME}: {error:#}");
            return ExitCode::from(2);
        }
    };
    let config = Arc::new(loaded.config);
    let destination = aos_daemon::logging::log_destination(
        aos_agent::logfile(&config),
        config.default.log_file.as_deref(),
        config.default.log_dir.as_deref(),
    );
    let _log_guard = match aos_daemon::logging::init_logging(destination.as_deref(), config.default.debug) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{NAME}: {error:#}");
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
        let shutdown = aos_daemon::shutdown_on_signals();
        let readiness = aos_daemon::Readiness::new(aos_agent::ROLE);
        if let Some(port) = config.agent.status_port {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            aos_daemon::status::serve_status(aos_agent::ROLE, address, readiness.clone(), shutdown.clone()).await?;
        }
        let settings = aos_agent::NodeSettings::from_config(&config);
        tracing::info!(node = %settings.node, storages = ?settings.storage_paths, "node agent starting");
        aos_daemon::systemd::notify_ready();
        let counters = Arc::new(aos_agent::NodeCounters::default());
        let node = aos_agent::run_node(settings, readiness, counters, shutdown.clone());
        tokio::pin!(node);
        tokio::select! {
            result = &mut node => result,
            _ = shutdown.cancelled() => {
                aos_daemon::systemd::notify_stopping();
                tokio::time::timeout(config.default.shutdown_timeout, &mut node).await.unwrap_or(Ok(()))
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(()) => {
            tracing::info!("node agent stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("{NAME}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
