//! `aos-cloud-manager-beat`: the scheduler. Exactly one beat is active across controllers: it
//! holds the `beat` lease (see `aos_daemon::lease`), and only while it does, it runs the
//! periodic jobs (node tracker, node and storage sync, balancing, DRS trigger — added by their
//! issues) and the housekeeping below. The others stand by and take over when the lease expires.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use aos_daemon::{CheckState, DaemonContext, LeaseGrant, LeaseKeeper};
use aos_jobs::{JobQueue, LeaseFence};

pub mod balancing;
pub mod drs_trigger;
pub mod node_sync;
pub mod storage_sync;

pub const ROLE: &str = "beat";
/// Name of the lease row that elects the active beat.
pub const LEASE_NAME: &str = "beat";

/// `[beat] logfile`.
pub fn logfile(config: &aos_config::Config) -> Option<&std::path::Path> {
    config.beat.logfile.as_deref()
}

/// Counters of the housekeeping job, for logs and (later) metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct BeatCounters {
    pub rounds: u64,
    pub stale_instances_purged: u64,
    pub tasks_republished: u64,
    pub node_syncs: u64,
    pub tracker_rounds: u64,
    pub storage_syncs: u64,
    pub balancing_rounds: u64,
    pub drs_audits: u64,
}

pub async fn run(context: DaemonContext) -> anyhow::Result<()> {
    let shutdown = context.shutdown.clone();
    let mut status_task = None;
    if let Some(port) = context.config.beat.status_port {
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let (_, task) =
            aos_daemon::status::serve_status(ROLE, address, context.readiness.clone(), shutdown.clone()).await?;
        status_task = Some(task);
    }
    let keeper = LeaseKeeper {
        name: LEASE_NAME.to_owned(),
        holder: context.identity.clone(),
        ttl: context.config.coordination.lease_ttl,
        renew_interval: context.config.coordination.lease_renew_interval,
    };
    let (mut grants, lease_task) = keeper.spawn(context.db.clone(), context.readiness.clone(), shutdown.clone());
    // The job queue is opened in the background: a broker outage must not stop the beat's
    // other work; the sweep simply waits for the queue.
    let queue = Arc::new(tokio::sync::OnceCell::new());
    let queue_task = tokio::spawn(open_queue(context.clone(), queue.clone()));
    // Keystone/Nova may be down at start too: connect in the background, sync when connected.
    let openstack = Arc::new(tokio::sync::OnceCell::new());
    let openstack_task = tokio::spawn(connect_openstack(context.clone(), openstack.clone()));
    let mut next_node_sync = tokio::time::Instant::now();
    let mut next_storage_sync = tokio::time::Instant::now();
    let mut counters = BeatCounters::default();
    let mut active_generation = None;
    // The balancing period last done by this process (the idempotency keys cover restarts
    // and other beats).
    let mut balanced_period: Option<i64> = None;
    let mut next_drs_trigger = tokio::time::Instant::now() + context.config.drs_trigger.trigger_interval;
    // Housekeeping does not need to be fast; the jobs of later issues keep their own periods.
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    // The node tracker keeps its own period, `[node_tracker] loop_time`.
    let mut tracker_ticker =
        tokio::time::interval(context.config.node_tracker.loop_time.max(Duration::from_millis(100)));
    tracker_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tracker_rules = aos_ha::TrackerRules::from_config(&context.config);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = grants.changed() => {
                if changed.is_err() { break; }
                // Renewals also change the grant (its deadline); log only a change of role.
                let generation = grants.borrow_and_update().map(|grant| grant.generation);
                if generation != active_generation {
                    match generation {
                        Some(generation) => tracing::info!(generation, identity = %context.identity, "beat active"),
                        None => tracing::info!(identity = %context.identity, "beat standing by"),
                    }
                    active_generation = generation;
                }
            }
            _ = tracker_ticker.tick() => {
                let grant = *grants.borrow();
                if let (Some(grant), Some(client)) = (grant.filter(LeaseGrant::is_valid), openstack.get())
                    && context.config.node_tracker.enabled
                {
                    let cloud = aos_ha::OpenStackCloud::new(client.clone());
                    let actor = format!("beat@{}", context.host);
                    match aos_ha::tracker_round(&context.db, &cloud, &tracker_rules, Some((LEASE_NAME, grant.generation)), &actor).await {
                        Ok(report) => {
                            counters.tracker_rounds += 1;
                            log_tracker_round(&report);
                            if let Some(queue) = queue.get() {
                                for task_id in &report.to_publish {
                                    if let Err(error) = queue.publish(*task_id).await {
                                        tracing::warn!(%task_id, error = %format!("{error:#}"), "recovery task recorded but not published; the sweep will publish it");
                                    }
                                }
                            }
                        }
                        Err(error) => tracing::warn!(error = %format!("{error:#}"), "node tracker round failed"),
                    }
                }
            }
            _ = ticker.tick() => {
                let grant = *grants.borrow();
                if let Some(grant) = grant.filter(LeaseGrant::is_valid)
                    && let Err(error) = run_once(&context, grant, queue.get(), &mut counters).await
                {
                    tracing::warn!(error = %format!("{error:#}"), "beat round failed");
                }
                let node_sync = &context.config.node_sync;
                if let (Some(grant), Some(client)) = (grant.filter(LeaseGrant::is_valid), openstack.get())
                    && node_sync.enabled
                    && tokio::time::Instant::now() >= next_node_sync
                {
                    next_node_sync = tokio::time::Instant::now() + node_sync.sync_interval;
                    let actor = format!("beat@{}", context.host);
                    match node_sync::sync_once(&context.db, client, Some((LEASE_NAME, grant.generation)), &actor).await {
                        Ok(report) => {
                            counters.node_syncs += 1;
                            if !(report.added.is_empty() && report.updated.is_empty() && report.removed.is_empty() && report.returned.is_empty()) {
                                tracing::info!(added = ?report.added, updated = ?report.updated, removed = ?report.removed, returned = ?report.returned, "node sync");
                            }
                        }
                        Err(error) => tracing::warn!(error = %format!("{error:#}"), "node sync failed"),
                    }
                    // The powered-off reserve pool: idle members are parked by a worker task.
                    let cloud = aos_ha::OpenStackCloud::new(client.clone());
                    let lease = Some((LEASE_NAME, grant.generation));
                    match aos_ha::pool::pool_round(&context.db, &cloud, node_sync.reserve_interval, lease, &actor).await {
                        Ok(report) => {
                            for (node, task_id) in &report.parks {
                                tracing::info!(%node, %task_id, "idle pool member: parking it in the powered-off reserve pool");
                            }
                            for (node, why) in &report.held {
                                tracing::info!(%node, %why, "idle pool member kept in service");
                            }
                            if let Some(queue) = queue.get() {
                                for task_id in &report.to_publish {
                                    if let Err(error) = queue.publish(*task_id).await {
                                        tracing::warn!(%task_id, error = %format!("{error:#}"), "park task recorded but not published; the sweep will publish it");
                                    }
                                }
                            }
                        }
                        Err(error) => tracing::warn!(error = %format!("{error:#}"), "reserve pool round failed"),
                    }
                }
                let balancing_section = &context.config.balancing;
                if let (Some(grant), Some(client)) = (grant.filter(LeaseGrant::is_valid), openstack.get())
                    && balancing_section.enabled
                    && balanced_period != Some(balancing::period_of(chrono::Utc::now(), balancing_section.periodic_time))
                {
                    let settings = balancing::BalancingSettings::from_config(&context.config);
                    let actor = format!("beat@{}", context.host);
                    let lease = Some((LEASE_NAME, grant.generation));
                    match balancing::balancing_round(&context.db, client, &settings, lease, &actor, None, chrono::Utc::now()).await {
                        Ok(report) => {
                            counters.balancing_rounds += 1;
                            balancing::log_report(&report);
                            if report.round_held.is_none() {
                                balanced_period = Some(report.period);
                            }
                            if let Some(queue) = queue.get() {
                                for task_id in report.recorded.values() {
                                    if let Err(error) = queue.publish(*task_id).await {
                                        tracing::warn!(%task_id, error = %format!("{error:#}"), "balancing task recorded but not published; the sweep will publish it");
                                    }
                                }
                            }
                        }
                        Err(error) => tracing::warn!(error = %format!("{error:#}"), "periodic balancing round failed"),
                    }
                }
                // The DRS trigger: only with a DRS system configured ([drs] host).
                if let (Some(grant), Some(client)) = (grant.filter(LeaseGrant::is_valid), openstack.get())
                    && !context.config.drs.host.is_empty()
                    && tokio::time::Instant::now() >= next_drs_trigger
                {
                    next_drs_trigger = tokio::time::Instant::now() + context.config.drs_trigger.trigger_interval;
                    let trigger = &context.config.drs_trigger;
                    match aos_balance::watcher::WatcherSettings::from_config(&context.config)
                        .unwrap_or_else(|| Err("[drs] host is empty".into()))
                        .and_then(|settings| aos_balance::watcher::WatcherRecommender::new(settings, Some(client.clone())))
                    {
                        Ok(source) => {
                            let actor = format!("beat@{}", context.host);
                            let lease = Some((LEASE_NAME, grant.generation));
                            match drs_trigger::drs_trigger_round(&context.db, lease, &source, None, trigger.enabled, &actor).await {
                                Ok(report) => {
                                    counters.drs_audits += u64::from(report.audit.is_some());
                                    drs_trigger::log_report(&report, "watcher", trigger.logfile.as_deref());
                                    if let (Some(task_id), Some(queue)) = (report.applying, queue.get())
                                        && let Err(error) = queue.publish(task_id).await
                                    {
                                        tracing::warn!(%task_id, error = %format!("{error:#}"), "DRS apply task recorded but not published; the sweep will publish it");
                                    }
                                }
                                Err(error) => tracing::warn!(error = %format!("{error:#}"), "DRS trigger round failed"),
                            }
                        }
                        Err(error) => tracing::warn!(%error, "DRS trigger: cannot set up the Watcher client"),
                    }
                }
                let storage_sync = &context.config.storage_sync;
                if let Some(grant) = grant.filter(LeaseGrant::is_valid)
                    && storage_sync.enabled
                    && tokio::time::Instant::now() >= next_storage_sync
                {
                    next_storage_sync = tokio::time::Instant::now() + storage_sync.sync_interval;
                    match storage_sync::sync_once(&context.db, Some((LEASE_NAME, grant.generation))).await {
                        Ok(report) => {
                            counters.storage_syncs += 1;
                            storage_sync::log_report(&report);
                        }
                        Err(error) => tracing::warn!(error = %format!("{error:#}"), "storage sync failed"),
                    }
                }
            }
        }
    }
    // Ordered shutdown: stop scheduling, then release the lease so a standby takes over now.
    let _ = lease_task.await;
    let _ = queue_task.await;
    openstack_task.abort();
    if let Some(queue) = queue.get() {
        queue.close().await;
    }
    if let Some(task) = status_task {
        let _ = task.await;
    }
    tracing::info!(
        rounds = counters.rounds,
        stale_instances_purged = counters.stale_instances_purged,
        tasks_republished = counters.tasks_republished,
        "beat stopped"
    );
    Ok(())
}

fn log_tracker_round(report: &aos_ha::RoundReport) {
    for (node, from, to) in &report.transitions {
        tracing::info!(%node, %from, %to, "node state changed");
    }
    for (node, task_id) in &report.recoveries {
        tracing::warn!(%node, %task_id, "node down: recovery started");
    }
    for (node, hold) in &report.held {
        tracing::debug!(%node, ?hold, "node down: evacuation held");
    }
    tracing::debug!(
        nodes = report.nodes,
        down_now = report.down_now,
        cloud_call_ms = report.cloud_call.as_millis() as u64,
        total_ms = report.total.as_millis() as u64,
        "node tracker round"
    );
}

/// One round of the active beat's work, every write guarded by the lease generation.
///
/// Today: republish orphaned tasks (pending too long, or running with a dead worker), and
/// forget service instances whose heartbeat stopped three periods ago (processes that died
/// without deregistering). The periodic jobs of later issues are added here.
pub async fn run_once(
    context: &DaemonContext,
    grant: LeaseGrant,
    queue: Option<&JobQueue>,
    counters: &mut BeatCounters,
) -> anyhow::Result<()> {
    counters.rounds += 1;
    let stale_after = aos_daemon::registry::HEARTBEAT_PERIOD * 3;
    let older_than = chrono::Utc::now() - chrono::Duration::from_std(stale_after)?;
    let transaction = aos_db::begin_write(&context.db).await?;
    aos_db::guard_lease(&transaction, LEASE_NAME, grant.generation).await?;
    let purged = aos_db::purge_stale_service_instances(&transaction, older_than).await?;
    transaction.commit().await?;
    if purged > 0 {
        tracing::info!(purged, "forgot service instances whose heartbeat stopped");
    }
    counters.stale_instances_purged += purged;
    if let Some(queue) = queue {
        let fence = LeaseFence { name: LEASE_NAME, generation: grant.generation };
        let stale_after = context.config.worker.task_stale_after;
        let republished =
            aos_jobs::requeue_orphans(&context.db, queue, fence, chrono::Utc::now(), ORPHAN_PENDING_AFTER, stale_after)
                .await?;
        counters.tasks_republished += republished as u64;
    }
    Ok(())
}

async fn connect_openstack(context: DaemonContext, cell: Arc<tokio::sync::OnceCell<aos_openstack::OpenStackClient>>) {
    if let Some(client) = aos_ha::daemon::connect_openstack(&context).await {
        let _ = cell.set(client);
    }
}

/// A pending task older than this is published again (a lost or failed publish only delays it;
/// duplicates are harmless because workers claim the task row before running it).
pub const ORPHAN_PENDING_AFTER: Duration = Duration::from_secs(60);

async fn open_queue(context: DaemonContext, cell: Arc<tokio::sync::OnceCell<JobQueue>>) {
    const CHECK: &str = "job_queue";
    context.readiness.set(CHECK, CheckState::Pending);
    let amqp_uri = context.config.default.transport_url.to_amqp_uri();
    let readiness = context.readiness.clone();
    let opened = JobQueue::open_with_backoff(
        &context.db,
        &amqp_uri,
        &context.config.worker.queue_prefix,
        &context.shutdown,
        |error| {
            readiness.set(CHECK, CheckState::Failing(error.to_string()));
        },
    )
    .await;
    if let Some(queue) = opened {
        context.readiness.set(CHECK, CheckState::Ok);
        let _ = cell.set(queue);
    }
}
