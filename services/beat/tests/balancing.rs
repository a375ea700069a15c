//! Periodic balancing (`aos_beat::balancing`).
//!
//! - On MariaDB and SQLite: recording a period's task is fenced by the lease and idempotent per
//!   aggregate and period; an HA recovery or a running balancing task of the aggregate is
//!   reported as busy.
//! - On the real test cloud (../shared/openstack-env) and MariaDB: a round plans an aggregate
//!   made unbalanced on purpose and records its task once; a second round in the same period
//!   is held while the task is pending; a round during an HA recovery is held. Then the cloud
//!   changes under the plan (an operator live-migrates one of the planned servers elsewhere):
//!   the task skips that migration with the reason, re-plans the remainder once from fresh
//!   data, and leaves no host loaded. Then, more servers on the first host: the DRS trigger
//!   audits the aggregate with our planner, applies the new plan automatically (logged to the
//!   trigger's logfile), holds the next audit while it applies, and every action succeeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_balance::drs::{DRS_APPLY_PLAN, PlannerRecommender};
use aos_balance::{BALANCE_AGGREGATE, BalanceTask, ExecuteSettings, PlannedMigration, PlannerSettings};
use aos_beat::balancing::{BalancingSettings, balancing_round, busy, idempotency_key, period_of, record};
use aos_beat::drs_trigger::{self, drs_trigger_round};
use aos_db::entity::{DrsActionState, DrsPlanState};
use aos_jobs::{JobRunner, NewTask, ProcessOutcome};
use aos_openstack::testing::{
    Cleanup, admin_client, eventually, install_crypto_provider, tiny_image_and_nano_flavor, unique_name,
    wait_for_status,
};
use aos_openstack::{NewServer, OpenStackClient};
use aos_testkit::testing::TestDatabase;

fn task(aggregate: &str) -> BalanceTask {
    BalanceTask {
        aggregate: aggregate.into(),
        migrations: vec![PlannedMigration {
            server_id: "server-1".into(),
            server_name: "vm".into(),
            source: "a".into(),
            target: "b".into(),
            ram_mb: 512,
            vcpus: 1,
        }],
        actor: "beat@test".into(),
        settings: PlannerSettings::default(),
        deny_hosts: Vec::new(),
    }
}

async fn recording_is_fenced_idempotent_and_busy_is_seen(database: &TestDatabase) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let key = idempotency_key("agg-a", 7);
    // Without the lease (a beat that lost it, or never had it): nothing is recorded.
    let refused = record(&db, Some((aos_beat::LEASE_NAME, 3)), &task("agg-a"), &key).await;
    assert!(refused.unwrap_err().to_string().contains("lease"), "a write without the lease must be refused");
    assert_eq!(busy(&db).await?, aos_beat::balancing::Busy::default());

    let first = record(&db, None, &task("agg-a"), &key).await?;
    assert!(first.created);
    let again = record(&db, None, &task("agg-a"), &key).await?;
    assert_eq!((again.task_id, again.created), (first.task_id, false), "one task per aggregate and period");
    let other_period = record(&db, None, &task("agg-a"), &idempotency_key("agg-a", 8)).await?;
    assert!(other_period.created);

    let busy_now = busy(&db).await?;
    assert_eq!(busy_now.recovery, None);
    assert_eq!(busy_now.aggregates.get("agg-a"), Some(&first.task_id.to_string()), "the oldest active task");
    assert!(aos_jobs::cancel_task(&db, first.task_id).await?);
    assert!(aos_jobs::cancel_task(&db, other_period.task_id).await?);
    assert!(busy(&db).await?.aggregates.is_empty(), "finished tasks do not hold an aggregate");

    let recovery = aos_jobs::insert_task(&db, &NewTask::new(aos_ha::RECOVER_NODE, serde_json::json!({}))).await?;
    let reason = busy(&db).await?.recovery.expect("an HA recovery holds balancing");
    assert!(reason.contains(&recovery.task_id.to_string()), "{reason}");
    db.close().await?;
    Ok(())
}

#[tokio::test]
async fn recording_is_fenced_idempotent_and_busy_is_seen_on_mariadb() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = recording_is_fenced_idempotent_and_busy_is_seen(&database).await;
    database.cleanup().await;
    outcome
}

#[tokio::test]
async fn recording_is_fenced_idempotent_and_busy_is_seen_on_sqlite() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    recording_is_fenced_idempotent_and_busy_is_seen(&database).await
}

const HOSTS: [&str; 3] = ["aos-beat-bal-1", "aos-beat-bal-2", "aos-beat-bal-3"];
const HOST_RAM_MB: u32 = 2048;
const SERVERS: usize = 8;

/// A round finds the aggregate balanced (no migration needed) within 30 s: Placement may still
/// count a live migration that just finished for a moment.
async fn balanced_soon(
    db: &aos_db::DatabaseConnection,
    client: &OpenStackClient,
    settings: &BalancingSettings,
    aggregate: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let round = balancing_round(db, client, settings, None, "beat@test", Some(aggregate), now).await?;
        if round.balanced == [aggregate.to_owned()] {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "a host is still loaded: {round:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn ram_used(client: &OpenStackClient, host: &str) -> u64 {
    let providers = client.resource_providers().await.expect("providers");
    let provider = providers.iter().find(|p| p.name == host).expect("provider of our host");
    client.usages(&provider.uuid).await.expect("usages").get("MEMORY_MB").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_beat_records_one_task_per_period_and_the_task_replans_when_the_cloud_changed() -> anyhow::Result<()> {
    install_crypto_provider();
    let client = admin_client().await;
    let aggregate_name = unique_name("aos-beat-bal");
    let server_ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (cleanup_ids, cleanup_aggregate) = (Arc::clone(&server_ids), aggregate_name.clone());
    let _cleanup = Cleanup::new(&client, move |client| async move {
        let ids = cleanup_ids.lock().unwrap().clone();
        aos_openstack::testing::delete_servers(&client, &ids).await;
        if let Ok(aggregates) = client.aggregates().await {
            for aggregate in aggregates.into_iter().filter(|a| a.name == cleanup_aggregate) {
                for host in &aggregate.hosts {
                    let _ = client.aggregate_remove_host(aggregate.id, host).await;
                }
                let _ = client.delete_aggregate(aggregate.id).await;
            }
        }
        for host in HOSTS {
            aos_openstack::testing::remove_own_compute(&client, host).await;
        }
    });
    for host in HOSTS {
        aos_openstack::testing::compute_sh_with_ram("start", host, HOST_RAM_MB).map_err(anyhow::Error::msg)?;
    }
    for host in HOSTS {
        aos_openstack::testing::start_own_compute(&client, host).await;
    }
    let aggregate = client.create_aggregate(&aggregate_name, None).await?;
    for host in HOSTS {
        client.aggregate_add_host(aggregate.id, host).await?;
    }
    let (image, flavor) = tiny_image_and_nano_flavor(&client).await;
    for index in 0..SERVERS {
        let id = aos_openstack::testing::boot_on(
            &client,
            NewServer {
                name: format!("{aggregate_name}-{index}"),
                image_id: image.clone(),
                flavor_id: flavor.clone(),
                host: Some(HOSTS[0].to_owned()),
                server_group: None,
                metadata: Default::default(),
            },
        )
        .await;
        server_ids.lock().unwrap().push(id);
    }
    let ids = server_ids.lock().unwrap().clone();
    for id in &ids {
        wait_for_status(&client, id, "ACTIVE").await;
    }
    eventually("Placement counts the servers", Duration::from_secs(60), Duration::from_secs(1), || async {
        let used = ram_used(&client, HOSTS[0]).await;
        Ok((used >= 64 * SERVERS as u64).then_some(()).ok_or(format!("{used} MB used")).ok())
    })
    .await;

    let database = TestDatabase::mysql().await?;
    let db = database.connect_migrated().await?;
    let settings = BalancingSettings {
        planner: PlannerSettings { approx: 0.1, vcpu_weight: 0.0 },
        deny_hosts: Vec::new(),
        periodic_time: Duration::from_secs(3600),
    };
    let now = chrono::Utc::now();

    // --- a round records the aggregate's plan once -------------------------------------
    let started = Instant::now();
    let report = balancing_round(&db, &client, &settings, None, "beat@test", Some(&aggregate_name), now).await?;
    println!("balancing round (one bulk read, plan, record): {:.2} s", started.elapsed().as_secs_f64());
    let task_id = *report.recorded.get(&aggregate_name).unwrap_or_else(|| panic!("no task recorded: {report:?}"));
    let row = aos_jobs::find_task(&db, task_id).await?.expect("task row");
    assert_eq!(row.kind, BALANCE_AGGREGATE);
    assert_eq!(row.idempotency_key, Some(idempotency_key(&aggregate_name, period_of(now, settings.periodic_time))));
    let planned: BalanceTask = serde_json::from_value(row.payload.clone().expect("payload"))?;
    assert!(!planned.migrations.is_empty());
    assert!(planned.migrations.iter().all(|m| m.source == HOSTS[0] && m.target != HOSTS[0]), "{planned:?}");

    // While it is pending, a second round (another beat, a restart) does not add one.
    let again = balancing_round(&db, &client, &settings, None, "beat@test", Some(&aggregate_name), now).await?;
    assert!(again.recorded.is_empty(), "{again:?}");
    assert!(again.held[&aggregate_name].contains(&task_id.to_string()), "{again:?}");
    // Nor during an HA recovery.
    let recovery = aos_jobs::insert_task(&db, &NewTask::new(aos_ha::RECOVER_NODE, serde_json::json!({}))).await?;
    let held = balancing_round(&db, &client, &settings, None, "beat@test", Some(&aggregate_name), now).await?;
    assert!(held.round_held.as_deref().is_some_and(|reason| reason.contains("HA recovery")), "{held:?}");
    assert!(aos_jobs::cancel_task(&db, recovery.task_id).await?);

    // --- the cloud changes under the plan: an operator moves the first planned server -------
    let moved = &planned.migrations[0];
    let elsewhere = HOSTS.iter().find(|host| **host != moved.source && **host != moved.target).expect("third host");
    client.live_migrate(&moved.server_id, Some(elsewhere)).await?;
    eventually("the operator's migration", Duration::from_secs(120), Duration::from_secs(1), || async {
        let server = client.server(&moved.server_id).await.map_err(|e| e.to_string())?;
        Ok((server.host.as_deref() == Some(*elsewhere) && server.status == "ACTIVE" && server.task_state.is_none())
            .then_some(()))
    })
    .await;

    // --- the task runs (as a worker would) -------------------------------------------------
    let queue =
        aos_jobs::JobQueue::connect_amqp(aos_testkit::TEST_AMQP_URI, &aos_testkit::queue_prefix(&database)).await?;
    let settings_run = ExecuteSettings { poll_interval: Duration::from_millis(500), ..ExecuteSettings::default() };
    let runner = aos_balance::register_tasks(
        JobRunner::new(db.clone(), queue.clone(), "test-worker", 1),
        client.clone(),
        settings_run,
    );
    let started = Instant::now();
    let outcome = runner.process_one(task_id).await?;
    println!("balance task with one skip and a re-plan: {:.1} s", started.elapsed().as_secs_f64());
    queue.close().await;
    let row = aos_jobs::find_task(&db, task_id).await?.expect("task row");
    assert_eq!(outcome, ProcessOutcome::Succeeded, "{:?} {:?}", row.error, row.result);
    let result = row.result.expect("result");
    let skipped = result["skipped"].as_array().expect("skipped");
    let of_moved: Vec<&serde_json::Value> =
        skipped.iter().filter(|skip| skip["server_id"] == moved.server_id.as_str()).collect();
    assert_eq!(of_moved.len(), 1, "{result}");
    let reason = of_moved[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("server is on {elsewhere}, no longer on {}", moved.source)), "{reason}");
    assert!(result["replanned"]["reasons"][0].as_str().unwrap_or_default().contains(reason), "{result}");
    // Any other skip is a migration of the re-plan that its own check refused (Placement may
    // still count a migration that just finished when the re-plan reads it).
    let replanned: Vec<&str> = result["replanned"]["migrations"]
        .as_array()
        .expect("replanned migrations")
        .iter()
        .filter_map(|m| m["server_id"].as_str())
        .collect();
    for skip in skipped.iter().filter(|skip| skip["server_id"] != moved.server_id.as_str()) {
        assert!(replanned.contains(&skip["server_id"].as_str().unwrap_or_default()), "{result}");
    }
    let (_, steps) = aos_ha::store::task_with_steps(&db, &task_id.to_string()).await?.expect("steps");
    let names: Vec<&str> = steps.iter().map(|step| step.name.as_str()).collect();
    assert!(names.contains(&"replan"), "{names:?}");
    let skipped_step = steps
        .iter()
        .find(|step| step.name == "live_migrate" && step.target == moved.server_id)
        .expect("the skipped step");
    assert!(skipped_step.details.as_ref().and_then(|d| d["skipped"].as_str()).is_some(), "{skipped_step:?}");
    // Every other planned server is on its target, and nothing is loaded now.
    for migration in &planned.migrations[1..] {
        let server = client.server(&migration.server_id).await?;
        assert_eq!(server.host.as_deref(), Some(migration.target.as_str()), "{}", migration.server_id);
    }
    balanced_soon(&db, &client, &settings, &aggregate_name, now).await?;

    // --- DRS: the trigger audits (our planner as the source) and applies automatically -------
    for index in SERVERS..SERVERS + 4 {
        let id = aos_openstack::testing::boot_on(
            &client,
            NewServer {
                name: format!("{aggregate_name}-{index}"),
                image_id: image.clone(),
                flavor_id: flavor.clone(),
                host: Some(HOSTS[0].to_owned()),
                server_group: None,
                metadata: Default::default(),
            },
        )
        .await;
        server_ids.lock().unwrap().push(id.clone());
        wait_for_status(&client, &id, "ACTIVE").await;
    }
    eventually("Placement counts the new servers", Duration::from_secs(60), Duration::from_secs(1), || async {
        let used = ram_used(&client, HOSTS[0]).await;
        Ok((used >= 64 * 9).then_some(()).ok_or(format!("{used} MB used")).ok())
    })
    .await;
    let planner = PlannerRecommender { client: client.clone(), settings: settings.planner, deny_hosts: Vec::new() };
    let scratch = aos_testkit::Scratch::new()?;
    let logfile = scratch.path().join("drs_trigger.log");
    let started = Instant::now();
    let report = drs_trigger_round(&db, None, &planner, Some(&aggregate_name), true, "beat@test").await?;
    println!("DRS trigger round (planner audit + apply recorded): {:.2} s", started.elapsed().as_secs_f64());
    drs_trigger::log_report(&report, "planner", Some(&logfile));
    let audit = report.audit.clone().expect("an audit");
    let plan_id = audit.plan_id.clone().unwrap_or_else(|| panic!("nothing recommended: {report:?}"));
    let apply_task = report.applying.expect("[drs_trigger] enabled applies the new plan");
    let logged = std::fs::read_to_string(&logfile)?;
    assert!(logged.contains(&format!("action plan {plan_id} recommended")), "{logged}");
    assert!(logged.contains(&format!("applying automatically as task {apply_task}")), "{logged}");
    let (plan, actions) = aos_db::drs_find_plan(&db, &plan_id).await?.expect("plan");
    assert_eq!(plan.state, DrsPlanState::Applying);
    assert!(!actions.is_empty() && actions.iter().all(|a| a.source_host.as_deref() == Some(HOSTS[0])));
    // While it applies, the next round does not audit.
    let held = drs_trigger_round(&db, None, &planner, Some(&aggregate_name), true, "beat@test").await?;
    assert!(held.held.as_deref().is_some_and(|h| h.contains(DRS_APPLY_PLAN)), "{held:?}");
    let queue =
        aos_jobs::JobQueue::connect_amqp(aos_testkit::TEST_AMQP_URI, &aos_testkit::queue_prefix(&database)).await?;
    let runner = aos_balance::drs::register_drs_tasks(
        JobRunner::new(db.clone(), queue.clone(), "test-worker", 1),
        db.clone(),
        client.clone(),
        ExecuteSettings { poll_interval: Duration::from_millis(500), ..ExecuteSettings::default() },
    );
    let started = Instant::now();
    let outcome = runner.process_one(apply_task).await?;
    println!("DRS plan of {} live migration(s) applied: {:.1} s", actions.len(), started.elapsed().as_secs_f64());
    queue.close().await;
    assert_eq!(outcome, ProcessOutcome::Succeeded);
    let (plan, actions) = aos_db::drs_find_plan(&db, &plan_id).await?.expect("plan");
    assert_eq!(plan.state, DrsPlanState::Succeeded);
    for action in &actions {
        assert_eq!(action.state, DrsActionState::Succeeded, "{action:?}");
        let server = client.server(&action.server_id).await?;
        assert_eq!(server.host, action.target_host, "{}", action.server_id);
    }
    balanced_soon(&db, &client, &settings, &aggregate_name, now).await?;

    db.close().await?;
    aos_testkit::delete_test_queues(&database).await;
    database.cleanup().await;
    Ok(())
}
