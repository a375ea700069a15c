//! `aos-cloud-manager-worker`: executes jobs (fence, force-down, evacuate, live-migrate, power
//! actions). Every controller runs one; they compete for tasks from the job queue (RabbitMQ,
//! or apalis-sqlite on the embedded default) through `aos_jobs::JobRunner`; docs/adr/0004-jobs.md.
//! Task kinds: `recover_node`, `park_node` (aos-ha), `balance_aggregate` (aos-balance); a task
//! of a kind this build does not know fails with a clear error and is dead-lettered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use aos_daemon::{CheckState, DaemonContext};
use aos_jobs::{JobQueue, JobRunner, RunnerSettings};

pub const ROLE: &str = "worker";

/// `[worker] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.worker.logfile.as_deref()
}

pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let shutdown = context.shutdown.clone();
    if let Some(port) = context.config.worker.status_port {
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        aos_daemon::status::serve_status(ROLE, address, context.readiness.clone(), shutdown.clone()).await?;
    }
    const CHECK: &str = "job_queue";
    context.readiness.set(CHECK, CheckState::Pending);
    let amqp_uri = context.config.default.transport_url.to_amqp_uri();
    let readiness = context.readiness.clone();
    let Some(queue) =
        JobQueue::open_with_backoff(&context.db, &amqp_uri, &context.config.worker.queue_prefix, &shutdown, |error| {
            readiness.set(CHECK, CheckState::Failing(error.to_string()));
        })
        .await
    else {
        return Ok(());
    };
    context.readiness.set(CHECK, CheckState::Ok);
    // Keystone/Nova may be down at start: tasks that need them retry until connected.
    let cloud = aos_ha::LazyCloud::new();
    let client = Arc::new(tokio::sync::OnceCell::new());
    let openstack_task = tokio::spawn(connect_openstack(context.clone(), cloud.clone(), client.clone()));
    let recovery = aos_ha::Recovery {
        db: context.db.clone(),
        cloud: Arc::new(cloud),
        fencer: Arc::new(aos_ha::PowerFencer::from_config(context.db.clone(), &context.config)),
        state_files: Arc::new(aos_ha::StorageStateFiles::new(context.db.clone())),
        settings: aos_ha::RecoverySettings::from_config(&context.config),
    };
    let runner = aos_ha::register_tasks(
        JobRunner::new(
            context.db.clone(),
            queue.clone(),
            format!("worker@{}", context.identity),
            context.config.worker.concurrency as usize,
        ),
        recovery,
    );
    let balancing = aos_balance::ExecuteSettings {
        migration_retries: context.config.balancing.migration_retries,
        ..aos_balance::ExecuteSettings::default()
    };
    // DRS action plans (`drs_apply_plan`, aos-balance, docs/adr/0015-drs.md).
    let runner = aos_balance::drs::register_drs_tasks_when_connected(
        runner,
        context.db.clone(),
        client.clone(),
        balancing.clone(),
    );
    let runner = aos_balance::register_tasks_when_connected(runner, client, balancing)
        .with_settings(runner_settings(&context.config));
    tracing::info!(
        queue = queue.queue_name(),
        concurrency = context.config.worker.concurrency,
        "worker consuming jobs"
    );
    let outcome = runner.run(shutdown).await;
    openstack_task.abort();
    queue.close().await;
    let counters = runner.counters();
    tracing::info!(
        processed = counters.processed,
        succeeded = counters.succeeded,
        failed = counters.failed,
        retried = counters.retried,
        skipped = counters.skipped,
        "worker stopped"
    );
    outcome
}

/// The runner's policy from the configuration: in-flight tasks get the shutdown deadline less
/// a margin for closing, so the daemon still exits within `[DEFAULT] shutdown_timeout`.
pub fn runner_settings(config: &aos_config::Config) -> RunnerSettings {
    let margin = std::time::Duration::from_secs(5);
    let grace = config.default.shutdown_timeout.saturating_sub(margin).max(std::time::Duration::from_secs(1));
    let stale_after = config.worker.task_stale_after;
    RunnerSettings {
        shutdown_grace: grace,
        stale_after,
        heartbeat_interval: (stale_after / 6).max(std::time::Duration::from_millis(500)),
        ..RunnerSettings::default()
    }
}

/// Connects to OpenStack in the background, then hands the client to the tasks.
async fn connect_openstack(
    context: DaemonContext,
    cloud: aos_ha::LazyCloud,
    cell: Arc<tokio::sync::OnceCell<aos_openstack::OpenStackClient>>,
) {
    if let Some(client) = aos_ha::daemon::connect_openstack(&context).await {
        let _ = cell.set(client.clone());
        cloud.set(Arc::new(aos_ha::OpenStackCloud::new(client)));
    }
}
