//! The HA core end to end on the simulated cloud, on MariaDB and SQLite: the tracker's rounds
//! (as the beat runs them) and the recovery task (as a worker runs it), with each safety rule
//! tested by a scenario that would evacuate if the rule were removed.
//!
//! The real-Nova end-to-end tests are in `tests/cloud_recovery.rs`; these cover the rules
//! quickly and deterministically (the tracker's rounds are driven by the test, not a timer).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use aos_db::DatabaseConnection;
use aos_db::entity::{NodeState, alarm, node, node_event, task};
use aos_ha::isolation::IsolationSettings;
use aos_ha::sim::{SimCloud, SimSettings};
use aos_ha::{Cloud, Recovery, RecoverySettings, TrackerRules, tracker_round};
use aos_jobs::{JobQueue, JobRunner, ProcessOutcome, RunnerSettings, TaskId};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2F";

struct Harness {
    db: DatabaseConnection,
    sim: Arc<SimCloud>,
    rules: TrackerRules,
    settings: RecoverySettings,
    queue: JobQueue,
}

fn sim_settings() -> SimSettings {
    SimSettings {
        call_latency: Duration::ZERO,
        rebuild_time: Duration::from_millis(50),
        service_down_time: Duration::ZERO,
        power_off_time: Duration::from_millis(10),
        host_vcpus: 16,
        host_ram_mb: 32_768,
    }
}

fn rules() -> TrackerRules {
    TrackerRules { mutex: 3, mutex_up: 1, max_down_hosts: 1, allow_evacuate_host: true, deny_evacuate: BTreeSet::new() }
}

fn recovery_settings() -> RecoverySettings {
    RecoverySettings {
        isolation: None,
        max_down_hosts: 1,
        default_priority: 5,
        evacuation_retries: 2,
        prioritized_evacuation_timeout: Duration::from_secs(10),
        retries_wait_for_vm_status: 200,
        poll_interval: Duration::from_millis(20),
        concurrency: 4,
        power_explains_within: Duration::from_secs(300),
        restart_after_evacuation: false,
        host_restart_timeout: Duration::from_secs(10),
        reserve_up_timeout: Duration::from_secs(10),
        shutdown_interval: Duration::from_millis(20),
        shutdown_max_tick: 50,
    }
}

fn runner_settings() -> RunnerSettings {
    RunnerSettings {
        heartbeat_interval: Duration::from_millis(200),
        stale_after: Duration::from_millis(1500),
        max_attempts: 3,
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(10),
        sqlite_poll_interval: Duration::from_millis(100),
    }
}

/// Four hosts with BMCs; h2 holds 5 servers: priorities 10, 10, 5 (default), 5 stopped, 0.
async fn harness(db: &DatabaseConnection) -> anyhow::Result<Harness> {
    harness_with(db, sim_settings(), &["h1", "h2", "h3", "h4"], &[]).await
}

async fn harness_with(
    db: &DatabaseConnection,
    settings: SimSettings,
    hosts: &[&str],
    reserves: &[&str],
) -> anyhow::Result<Harness> {
    aos_db::migrate_to(db, None).await?;
    let sim = Arc::new(SimCloud::new(settings));
    for host in hosts {
        sim.add_host(host, true);
    }
    for host in reserves {
        sim.add_reserve_host(host);
    }
    sim.add_server("db-1", "h2", Some(10), false);
    sim.add_server("db-2", "h2", Some(10), false);
    sim.add_server("web-1", "h2", None, false);
    sim.add_server("batch-1", "h2", None, true);
    sim.add_server("pinned-1", "h2", Some(0), false);
    sim.add_server("other-1", "h1", None, false);
    aos_ha::cloud::sync_nodes_from(db, sim.as_ref(), |_| true, "test").await?;
    let queue = match db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => JobQueue::sqlite(db).await?,
        _ => JobQueue::connect_amqp(AMQP, &format!("aos-test-ha-{}", uuid::Uuid::new_v4().simple())).await?,
    };
    Ok(Harness { db: db.clone(), sim, rules: rules(), settings: recovery_settings(), queue })
}

impl Harness {
    fn runner(&self, identity: &str) -> JobRunner {
        let recovery = Recovery {
            db: self.db.clone(),
            cloud: self.sim.clone(),
            fencer: self.sim.clone(),
            state_files: self.sim.clone(),
            settings: self.settings.clone(),
        };
        aos_ha::register_tasks(JobRunner::new(self.db.clone(), self.queue.clone(), identity, 2), recovery)
            .with_settings(runner_settings())
    }

    /// `n` tracker rounds; the tasks they started.
    async fn rounds(&self, n: usize) -> anyhow::Result<Vec<TaskId>> {
        let mut started = Vec::new();
        for _ in 0..n {
            let report = tracker_round(&self.db, self.sim.as_ref(), &self.rules, None, "beat@test").await?;
            started.extend(report.to_publish);
        }
        Ok(started)
    }

    async fn node(&self, name: &str) -> anyhow::Result<node::Model> {
        aos_db::find_node(&self.db, name).await?.with_context(|| format!("node {name}"))
    }

    async fn open_alarms(&self, kind: &str) -> anyhow::Result<Vec<alarm::Model>> {
        Ok(alarm::Entity::find()
            .filter(alarm::Column::Kind.eq(kind))
            .filter(alarm::Column::ClearedAt.is_null())
            .all(&self.db)
            .await?)
    }

    async fn tasks(&self) -> anyhow::Result<Vec<task::Model>> {
        Ok(task::Entity::find().all(&self.db).await?)
    }

    async fn finish(self) {
        if self.db.get_database_backend() != sea_orm::DbBackend::Sqlite {
            let _ = self.queue.delete().await;
        }
        self.queue.close().await;
    }
}

fn servers_on(sim: &SimCloud, host: &str) -> Vec<String> {
    sim.servers_snapshot().into_iter().filter(|s| s.host.as_deref() == Some(host)).map(|s| s.name).collect()
}

async fn a_dead_host_is_confirmed_after_mutex_rounds_fenced_forced_down_and_evacuated_by_priority(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let h = harness(db).await?;
    h.sim.kill("h2");
    ensure!(h.rounds(2).await?.is_empty(), "two down observations are not enough with mutex = 3");
    ensure!(h.node("h2").await?.state == NodeState::Suspect);
    let started = h.rounds(1).await?;
    ensure!(started.len() == 1, "the third round confirms and starts one recovery: {started:?}");
    ensure!(h.rounds(2).await?.is_empty(), "later rounds do not start a second recovery");

    let before = h.sim.calls();
    let outcome = h.runner("worker@test").process_one(started[0]).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    // Nova is asked about the servers in bulk: the idempotency checks once per group, the
    // polls once per round — never one GET per server, nor one evacuation listing per server.
    let calls =
        |name: &str, calls: &std::collections::BTreeMap<&'static str, u64>| calls.get(name).copied().unwrap_or(0);
    let after = h.sim.calls();
    let (single, bulk, listings) = (
        calls("server", &after) - calls("server", &before),
        calls("servers_now", &after) - calls("servers_now", &before),
        calls("evacuations_from", &after) - calls("evacuations_from", &before),
    );
    ensure!(single == 0 && bulk > 0, "{single} single-server calls, {bulk} bulk calls");
    ensure!(listings == 2, "one evacuation listing per group (2 groups, 4 servers), not per server: {listings}");
    ensure!(h.node("h2").await?.state == NodeState::Evacuated);
    ensure!(
        servers_on(&h.sim, "h2") == ["pinned-1"],
        "only the priority-0 server stays: {:?}",
        servers_on(&h.sim, "h2")
    );
    for server in h.sim.servers_snapshot() {
        let expected = if server.name == "batch-1" { "SHUTOFF" } else { "ACTIVE" };
        ensure!(server.status == expected, "{} is {} (expected {expected})", server.name, server.status);
    }
    ensure!(h.sim.evacuation_counts().values().all(|count| *count == 1), "{:?}", h.sim.evacuation_counts());

    // The timeline: fenced before any evacuation, and the higher priority group first.
    let events = node_event::Entity::find()
        .filter(node_event::Column::NodeId.eq(h.node("h2").await?.id))
        .order_by_asc(node_event::Column::Id)
        .all(db)
        .await?;
    let states: Vec<String> = events.iter().filter_map(|event| event.to_state.clone()).collect();
    ensure!(
        states == ["suspect", "down", "fencing", "fenced", "evacuating", "evacuated"],
        "the node went through {states:?}"
    );
    let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
    let fenced = kinds.iter().position(|kind| *kind == "forced_down").context("forced_down event")?;
    let evacuating = states.iter().position(|state| state == "evacuating").context("evacuating")?;
    ensure!(fenced > 0 && evacuating > 0);
    h.finish().await;
    Ok(())
}

async fn a_host_that_comes_back_inside_the_debounce_window_is_not_evacuated(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let h = harness(db).await?;
    h.sim.kill("h2");
    ensure!(h.rounds(2).await?.is_empty());
    h.sim.revive("h2");
    ensure!(h.rounds(3).await?.is_empty(), "no recovery after a flap");
    ensure!(h.node("h2").await?.state == NodeState::Up);
    ensure!(h.tasks().await?.is_empty());
    ensure!(h.sim.evacuation_counts().is_empty());
    h.finish().await;
    Ok(())
}

async fn more_hosts_down_than_max_down_hosts_evacuates_nothing_and_raises_an_alarm(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let h = harness(db).await?;
    h.sim.kill("h1");
    h.sim.kill("h2");
    ensure!(h.rounds(5).await?.is_empty(), "two hosts down with max_down_hosts = 1: no recovery");
    ensure!(h.tasks().await?.is_empty());
    ensure!(!h.open_alarms("storm_guard").await?.is_empty(), "a storm guard alarm is raised");
    ensure!(h.node("h1").await?.state == NodeState::Down && h.node("h2").await?.state == NodeState::Down);
    ensure!(h.sim.evacuation_counts().is_empty());
    h.finish().await;
    Ok(())
}

async fn max_down_hosts_0_turns_automatic_evacuation_off(db: &DatabaseConnection) -> anyhow::Result<()> {
    let mut h = harness(db).await?;
    h.rules.max_down_hosts = 0;
    h.sim.kill("h2");
    ensure!(h.rounds(4).await?.is_empty());
    ensure!(!h.open_alarms("auto_evacuation_off").await?.is_empty());
    ensure!(h.sim.evacuation_counts().is_empty());
    h.finish().await;
    Ok(())
}

async fn a_node_in_the_deny_list_is_not_evacuated(db: &DatabaseConnection) -> anyhow::Result<()> {
    let mut h = harness(db).await?;
    h.rules.deny_evacuate.insert("h2".into());
    h.sim.kill("h2");
    ensure!(h.rounds(4).await?.is_empty());
    ensure!(!h.open_alarms("evacuation_denied").await?.is_empty());
    ensure!(h.sim.evacuation_counts().is_empty());
    h.finish().await;
    Ok(())
}

async fn a_node_alive_on_its_storage_is_not_evacuated(db: &DatabaseConnection) -> anyhow::Result<()> {
    let mut h = harness(db).await?;
    h.settings.isolation =
        Some(IsolationSettings { delay: Duration::from_millis(10), attempts: 2, instance_rate: 100 });
    // The control plane loses h2, which keeps running its servers and writing its state file.
    h.sim.partition("h2");
    let started = h.rounds(3).await?;
    ensure!(started.len() == 1);
    let outcome = h.runner("worker@test").process_one(started[0]).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    let result = h.tasks().await?.remove(0).result.context("task result")?;
    ensure!(result["outcome"] == "withheld", "{result}");
    ensure!(h.sim.is_running("h2"), "an isolated node is not powered off");
    ensure!(h.sim.evacuation_counts().is_empty());
    ensure!(!h.open_alarms("node_isolated").await?.is_empty());
    ensure!(h.node("h2").await?.state == NodeState::Down);
    h.finish().await;
    Ok(())
}

async fn a_failed_fence_stops_the_evacuation_until_the_operator_skips_fencing(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let h = harness(db).await?;
    h.sim.kill("h2");
    h.sim.bmc_down("h2");
    let started = h.rounds(3).await?;
    ensure!(started.len() == 1);
    let outcome = h.runner("worker@test").process_one(started[0]).await?;
    ensure!(matches!(outcome, ProcessOutcome::Failed { .. }), "{outcome:?}");
    ensure!(h.node("h2").await?.state == NodeState::FenceFailed);
    ensure!(h.sim.evacuation_counts().is_empty(), "nothing is evacuated from a node that may still run");
    ensure!(!h.open_alarms("fence_failed").await?.is_empty());

    let task_id = aos_ha::operator::request_evacuation(&h.db, "h2", true, "admin").await?;
    let outcome = h.runner("worker@test").process_one(task_id).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(h.node("h2").await?.state == NodeState::Evacuated);
    ensure!(servers_on(&h.sim, "h2") == ["pinned-1"]);
    h.finish().await;
    Ok(())
}

/// A cloud whose `evacuate` hangs for ever once `stall_from` requests were made, after
/// doing its work: the crash window of a step (the effect happened, its success is not
/// recorded) for the worker that is about to die.
struct StallingCloud {
    inner: Arc<SimCloud>,
    requests: std::sync::atomic::AtomicUsize,
    stall_from: usize,
}

#[async_trait::async_trait]
impl Cloud for StallingCloud {
    async fn compute_hosts(&self) -> Result<Vec<aos_ha::HostObservation>, aos_ha::CloudError> {
        self.inner.compute_hosts().await
    }
    async fn set_forced_down(&self, service_id: &str, forced_down: bool) -> Result<(), aos_ha::CloudError> {
        self.inner.set_forced_down(service_id, forced_down).await
    }
    async fn servers_on_host(&self, host: &str) -> Result<Vec<aos_ha::CloudServer>, aos_ha::CloudError> {
        self.inner.servers_on_host(host).await
    }
    async fn server(&self, server_id: &str) -> Result<aos_ha::CloudServer, aos_ha::CloudError> {
        self.inner.server(server_id).await
    }
    async fn evacuate(&self, server_id: &str) -> Result<(), aos_ha::CloudError> {
        self.inner.evacuate(server_id).await?;
        if self.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= self.stall_from {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn evacuations_from(
        &self,
        host: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<aos_ha::cloud::EvacuationRecord>, aos_ha::CloudError> {
        self.inner.evacuations_from(host, since).await
    }
    async fn capacities(&self) -> Result<Vec<aos_ha::cloud::HostCapacity>, aos_ha::CloudError> {
        self.inner.capacities().await
    }
    async fn set_service_enabled(
        &self,
        service_id: &str,
        enabled: bool,
        reason: &str,
    ) -> Result<(), aos_ha::CloudError> {
        self.inner.set_service_enabled(service_id, enabled, reason).await
    }
    async fn aggregates_of(&self, host: &str) -> Result<Vec<aos_ha::cloud::HostAggregate>, aos_ha::CloudError> {
        self.inner.aggregates_of(host).await
    }
    async fn add_to_aggregate(&self, aggregate_id: i64, host: &str) -> Result<(), aos_ha::CloudError> {
        self.inner.add_to_aggregate(aggregate_id, host).await
    }
}

async fn a_worker_killed_mid_evacuation_is_resumed_without_evacuating_any_server_twice(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let mut h = harness(db).await?;
    h.settings.concurrency = 1;
    h.sim.kill("h2");
    let started = h.rounds(3).await?;
    ensure!(started.len() == 1);
    let task_id = started[0];
    // The first worker dies inside its second evacuation step, after Nova accepted it.
    let stalling = Arc::new(StallingCloud { inner: h.sim.clone(), requests: Default::default(), stall_from: 2 });
    let recovery = Recovery {
        db: h.db.clone(),
        cloud: stalling,
        fencer: h.sim.clone(),
        state_files: h.sim.clone(),
        settings: h.settings.clone(),
    };
    let first = aos_ha::register_tasks(JobRunner::new(h.db.clone(), h.queue.clone(), "worker@first", 1), recovery)
        .with_settings(runner_settings());
    let running = tokio::spawn(async move { first.process_one(task_id).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.sim.evacuation_counts().len() < 2 {
        ensure!(tokio::time::Instant::now() < deadline, "the first worker never reached its second evacuation");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.abort();
    let _ = running.await;
    // Another worker takes the task once the first one's heartbeat is stale.
    let second = h.runner("worker@second");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match second.process_one(task_id).await? {
            ProcessOutcome::Succeeded => break,
            ProcessOutcome::Skipped => {
                ensure!(tokio::time::Instant::now() < deadline, "the task was never resumed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => anyhow::bail!("resumed task ended {other:?}"),
        }
    }
    ensure!(h.node("h2").await?.state == NodeState::Evacuated);
    let counts = h.sim.evacuation_counts();
    ensure!(counts.len() == 4 && counts.values().all(|count| *count == 1), "each server evacuated once: {counts:?}");
    h.finish().await;
    Ok(())
}

async fn with_auto_power_off_the_fenced_host_is_restarted_and_returns_to_service(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let mut h = harness(db).await?;
    h.settings.restart_after_evacuation = true;
    h.sim.kill("h2");
    let started = h.rounds(3).await?;
    ensure!(started.len() == 1);
    let outcome = h.runner("worker@test").process_one(started[0]).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    let result = h.tasks().await?.remove(0).result.context("result")?;
    ensure!(result["restart"]["restarted"] == true, "{result}");
    ensure!(h.node("h2").await?.state == NodeState::Recovering);
    ensure!(h.sim.is_running("h2"), "powered on again through its BMC");
    let forced = h.sim.compute_hosts().await?.into_iter().find(|host| host.host == "h2").context("h2")?.forced_down;
    ensure!(!forced, "forced_down cleared once its compute ran");
    h.rounds(1).await?;
    ensure!(h.node("h2").await?.state == NodeState::Up, "up after mutex_up observations");
    h.finish().await;
    Ok(())
}

async fn a_host_that_does_not_come_back_stays_evacuated_and_forced_down(db: &DatabaseConnection) -> anyhow::Result<()> {
    let mut h = harness(db).await?;
    h.settings.restart_after_evacuation = true;
    h.settings.host_restart_timeout = Duration::from_millis(300);
    h.sim.kill("h2");
    let started = h.rounds(3).await?;
    // Fencing works, but the host does not power on again.
    h.sim.refuse_power_on("h2");
    let outcome = h.runner("worker@test").process_one(started[0]).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(h.node("h2").await?.state == NodeState::Evacuated);
    ensure!(!h.open_alarms("host_restart_failed").await?.is_empty());
    let forced = h.sim.compute_hosts().await?.into_iter().find(|host| host.host == "h2").context("h2")?.forced_down;
    ensure!(forced, "forced_down kept");
    h.finish().await;
    Ok(())
}

async fn a_reserve_host_is_brought_up_when_the_others_cannot_hold_the_servers(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    // Two hosts of 8 GiB: h1 has 6 GiB free, h2's four evacuable servers need 8 GiB.
    let settings = SimSettings { host_ram_mb: 8192, ..sim_settings() };
    let h = harness_with(db, settings, &["h1", "h2"], &["r1"]).await?;
    let aggregate = h.sim.add_aggregate("gold", &["h1", "h2"]);
    // r1 joined the node table through node sync; the operator made it h2's reserve.
    aos_ha::reserve::add(&h.db, "r1", "h2", 10, None, "admin").await?;
    ensure!(h.node("r1").await?.state == NodeState::Reserve);
    h.sim.kill("h2");
    let started = h.rounds(3).await?;
    ensure!(started.len() == 1, "one down host of two, max_down_hosts 1: recovery ({started:?})");
    let outcome = h.runner("worker@test").process_one(started[0]).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(h.sim.is_running("r1") && h.sim.is_enabled("r1"), "the reserve was powered on and enabled");
    ensure!(h.sim.aggregate_hosts(aggregate).contains("r1"), "and placed in the failed host's aggregates");
    ensure!(h.node("r1").await?.state == NodeState::Up);
    ensure!(!servers_on(&h.sim, "r1").is_empty(), "it took some of the servers");
    ensure!(h.node("h2").await?.state == NodeState::Evacuated);
    ensure!(h.open_alarms("capacity_short").await?.is_empty(), "capacity was enough once the reserve was up");
    h.finish().await;
    Ok(())
}

async fn a_planned_shutdown_powers_the_host_off_and_evacuates_it_without_the_tracker_interfering(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let h = harness(db).await?;
    let task_id = aos_ha::operator::request_shutdown(&h.db, "h2", "admin").await?;
    // The tracker runs meanwhile, as the beat would: it must not start a recovery of its own.
    let runner = h.runner("worker@test");
    let running = tokio::spawn(async move { runner.process_one(task_id).await });
    let mut tracker_tasks = Vec::new();
    while !running.is_finished() {
        tracker_tasks.extend(h.rounds(1).await?);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outcome = running.await??;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(tracker_tasks.is_empty(), "the tracker left the node in maintenance alone: {tracker_tasks:?}");
    ensure!(!h.sim.is_running("h2"), "powered off");
    ensure!(!h.sim.is_enabled("h2"), "disabled in Nova");
    ensure!(h.node("h2").await?.state == NodeState::Evacuated);
    ensure!(servers_on(&h.sim, "h2") == ["pinned-1"]);
    ensure!(h.sim.evacuation_counts().values().all(|count| *count == 1));
    let refused = aos_ha::operator::request_shutdown(&h.db, "h2", "admin").await;
    ensure!(refused.is_err(), "an evacuated node cannot be shut down again");
    h.finish().await;
    Ok(())
}

const POOL_MAC: &str = "52:54:00:a0:00:09";

async fn an_idle_pool_member_is_parked_then_booted_over_pxe_when_capacity_is_short(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    // Two hosts of 8 GiB: h1 has 6 GiB free, h2's four evacuable servers need 8 GiB; p1 is
    // empty and in the pool.
    let settings = SimSettings { host_ram_mb: 8192, ..sim_settings() };
    let h = harness_with(db, settings, &["h1", "h2", "p1"], &[]).await?;
    let aggregate = h.sim.add_aggregate("gold", &["h1", "h2"]);
    let mac: aos_power::MacAddress = POOL_MAC.parse().map_err(anyhow::Error::msg)?;
    aos_ha::reserve::pool_add(&h.db, h.sim.as_ref(), "p1", Some(mac), "admin").await?;
    let refused = aos_ha::reserve::pool_add(&h.db, &aos_ha::NoPowerDevices, "h1", None, "admin").await;
    ensure!(refused.is_err(), "a host without a power device could not come back: refused");

    // Idle for reserve_interval (0 here): parked.
    let report = aos_ha::pool::pool_round(&h.db, h.sim.as_ref(), Duration::ZERO, None, "beat@test").await?;
    ensure!(report.idle == ["p1"] && report.parks.len() == 1, "{report:?}");
    let again = aos_ha::pool::pool_round(&h.db, h.sim.as_ref(), Duration::ZERO, None, "beat@test").await?;
    ensure!(again.parks.is_empty(), "one park task per idle period: {again:?}");
    let outcome = h.runner("worker@test").process_one(report.to_publish[0]).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(h.node("p1").await?.state == NodeState::Reserve, "parked");
    ensure!(!h.sim.is_enabled("p1") && !h.sim.is_running("p1"), "disabled in Nova and powered off");
    // Parked and powered off, its nova-compute goes down: the tracker leaves it alone.
    ensure!(h.rounds(4).await?.is_empty(), "no recovery of a parked host");

    // h2 fails; h1 cannot hold its servers: the pool host is booted over PXE.
    h.sim.kill("h2");
    let started = h.rounds(3).await?;
    ensure!(started.len() == 1, "{started:?}");
    let outcome = h.runner("worker@test").process_one(started[0]).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(h.node("p1").await?.state == NodeState::Up, "back in service");
    ensure!(h.sim.is_running("p1") && h.sim.is_enabled("p1"));
    ensure!(h.sim.aggregate_hosts(aggregate).contains("p1"), "placed in the failed host's aggregate");
    ensure!(!servers_on(&h.sim, "p1").is_empty(), "it took some of the servers");
    let log = h.sim.power_log();
    let at = |entry: &str| log.iter().position(|line| line == entry);
    let pxe = at(&format!("pxe p1 {POOL_MAC}")).context("PXE boot prepared")?;
    let on = log.iter().rposition(|line| line == "on p1").context("powered on")?;
    let done = at(&format!("pxe_done p1 {POOL_MAC}")).context("PXE file removed after boot")?;
    ensure!(pxe < on && on < done, "PXE prepared, then power on, then PXE file removed: {log:?}");
    ensure!(h.node("h2").await?.state == NodeState::Evacuated);
    h.finish().await;
    Ok(())
}

async fn a_pool_member_is_kept_in_service_while_busy_needed_or_given_a_server_meanwhile(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    let h = harness_with(db, sim_settings(), &["h1", "h2", "h3", "p1", "p2"], &[]).await?;
    // h1 runs other-1: never idle.
    for host in ["h1", "p1", "p2"] {
        aos_ha::reserve::pool_add(&h.db, h.sim.as_ref(), host, None, "admin").await?;
    }
    let round = || aos_ha::pool::pool_round(&h.db, h.sim.as_ref(), Duration::ZERO, None, "beat@test");

    // 1. A server the scheduler had placed on p1 lands as p1 is disabled: kept in service.
    h.sim.land_when_disabled("p1", "late-1");
    let report = round().await?;
    ensure!(report.idle == ["p1", "p2"] && report.parks.len() == 2, "{report:?}");
    let p1_task = report.parks.iter().find(|(node, _)| node == "p1").context("p1 park")?.1.parse()?;
    let outcome = h.runner("worker@test").process_one(p1_task).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(h.node("p1").await?.state == NodeState::Up, "not parked");
    ensure!(h.sim.is_enabled("p1") && h.sim.is_running("p1"), "enabled again, never powered off");
    ensure!(servers_on(&h.sim, "p1") == ["late-1"]);
    ensure!(h.node("p1").await?.idle_since.is_none(), "idle clock reset");
    ensure!(round().await?.idle == ["p2"], "p1 is busy now");

    // 2. A recovery under way holds parking (its evacuations may need the idle host).
    h.sim.kill("h2");
    h.rounds(3).await?;
    ensure!(h.node("h2").await?.state == NodeState::Down, "h2 confirmed down, recovery pending");
    let fresh = aos_ha::pool::pool_round(&h.db, h.sim.as_ref(), Duration::ZERO, None, "beat@test").await?;
    ensure!(fresh.parks.is_empty(), "no new park task while h2 is being recovered: {fresh:?}");
    ensure!(fresh.held.iter().any(|(node, _)| node == "p2"), "{fresh:?}");
    // p2's task, recorded before the failure, now finds a recovery under way: kept.
    let p2_task = report.parks.iter().find(|(node, _)| node == "p2").context("p2 park")?.1.parse()?;
    let outcome = h.runner("worker@test").process_one(p2_task).await?;
    ensure!(outcome == ProcessOutcome::Succeeded, "{outcome:?}");
    ensure!(h.node("p2").await?.state == NodeState::Up && h.sim.is_enabled("p2"), "p2 kept in service");
    ensure!(h.node("h1").await?.state == NodeState::Up && h.sim.is_running("h1"), "h1 never parked");
    let log = h.sim.power_log();
    ensure!(
        !log.iter().any(|line| line.starts_with("off ") && line != "off h2"),
        "nothing but h2 powered off: {log:?}"
    );
    h.finish().await;
    Ok(())
}

aos_db::db_test_suite!(
    an_idle_pool_member_is_parked_then_booted_over_pxe_when_capacity_is_short,
    a_pool_member_is_kept_in_service_while_busy_needed_or_given_a_server_meanwhile,
    a_planned_shutdown_powers_the_host_off_and_evacuates_it_without_the_tracker_interfering,
    with_auto_power_off_the_fenced_host_is_restarted_and_returns_to_service,
    a_host_that_does_not_come_back_stays_evacuated_and_forced_down,
    a_reserve_host_is_brought_up_when_the_others_cannot_hold_the_servers,
    a_dead_host_is_confirmed_after_mutex_rounds_fenced_forced_down_and_evacuated_by_priority,
    a_host_that_comes_back_inside_the_debounce_window_is_not_evacuated,
    more_hosts_down_than_max_down_hosts_evacuates_nothing_and_raises_an_alarm,
    max_down_hosts_0_turns_automatic_evacuation_off,
    a_node_in_the_deny_list_is_not_evacuated,
    a_node_alive_on_its_storage_is_not_evacuated,
    a_failed_fence_stops_the_evacuation_until_the_operator_skips_fencing,
    a_worker_killed_mid_evacuation_is_resumed_without_evacuating_any_server_twice,
);
