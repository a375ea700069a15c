//! DRS with the real OpenStack Watcher (python-watcher's watcher-api and decision engine,
//! started by `tests/watcher/ensure-watcher.sh` against the real test cloud and MariaDB):
//! Watcher's `host_maintenance` strategy recommends moving every server off a host of our own;
//! the audit is recorded with Watcher's plan as ours (its live `migrate` actions; the
//! `change_nova_service_state` action listed as ignored), and applying the plan live-migrates
//! the servers with our executor, each action ending `succeeded`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_balance::ExecuteSettings;
use aos_balance::drs::{apply_plan, register_drs_tasks, run_audit};
use aos_balance::watcher::{WatcherRecommender, WatcherSettings};
use aos_db::entity::{DrsActionState, DrsPlanState};
use aos_db::testing::TestDatabase;
use aos_jobs::{JobRunner, ProcessOutcome};
use aos_openstack::NewServer;
use aos_openstack::testing::{
    Cleanup, admin_client, admin_settings, install_crypto_provider, tiny_image_and_nano_flavor, unique_name,
    wait_for_status,
};
use serde_json::json;

const HOSTS: [&str; 2] = ["aos-drs-watcher-1", "aos-drs-watcher-2"];

fn ensure_watcher() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/watcher/ensure-watcher.sh");
    let output = std::process::Command::new(script).output().expect("run ensure-watcher.sh");
    println!("{}", String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        output.status.success(),
        "Watcher is not running: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_host_maintenance_plan_is_recorded_and_applied_by_live_migrations() {
    install_crypto_provider();
    ensure_watcher();
    let client = admin_client().await;
    let prefix = unique_name("aos-drs-w");
    let server_ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let cleanup_ids = Arc::clone(&server_ids);
    let _cleanup = Cleanup::new(&client, move |client| async move {
        let ids = cleanup_ids.lock().unwrap().clone();
        aos_openstack::testing::delete_servers(&client, &ids).await;
        for host in HOSTS {
            aos_openstack::testing::remove_own_compute(&client, host).await;
        }
    });
    for host in HOSTS {
        aos_openstack::testing::compute_sh_with_ram("start", host, 2048).expect("start compute");
    }
    for host in HOSTS {
        aos_openstack::testing::start_own_compute(&client, host).await;
    }
    let (image, flavor) = tiny_image_and_nano_flavor(&client).await;
    for index in 0..2 {
        let id = aos_openstack::testing::boot_on(
            &client,
            NewServer {
                name: format!("{prefix}-{index}"),
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

    let database = TestDatabase::mysql().await.expect("test database");
    let db = database.connect_migrated().await.expect("migrated database");
    let settings = WatcherSettings {
        endpoint: "http://127.0.0.1:9322/".parse().unwrap(),
        auth: admin_settings(),
        goal: "cluster_maintaining".into(),
        strategy: Some("host_maintenance".into()),
        parameters: serde_json::from_value(json!({ "maintenance_node": HOSTS[0], "backup_node": HOSTS[1] })).unwrap(),
        poll_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(120),
    };
    let watcher = WatcherRecommender::new(settings, Some(client.clone())).expect("Watcher client");

    // Watcher's data model is collected every 10 s: audit until it knows both servers (each
    // newer plan supersedes the older recommended one). Until its model has our new hosts
    // (its collection also fails while Nova's API answers 500 under load), Watcher fails the
    // audit ("compute node … could not be found"): audit again, up to the deadline.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut audits = Vec::new();
    let (plan_id, took) = loop {
        let started = Instant::now();
        let outcome = run_audit(&db, None, &watcher, None, "operator", "test").await.expect("audit recorded");
        let took = started.elapsed();
        audits.push(outcome.clone());
        if let Some(error) = &outcome.error {
            assert!(Instant::now() < deadline, "the Watcher audits failed until the deadline: {audits:?}");
            println!("Watcher audit failed ({error}); auditing again");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        if let Some(plan_id) = &outcome.plan_id {
            let (_, actions) = aos_db::drs_find_plan(&db, plan_id).await.unwrap().unwrap();
            let ours: Vec<&str> =
                actions.iter().map(|a| a.server_id.as_str()).filter(|id| ids.iter().any(|i| i == id)).collect();
            if ours.len() == ids.len() {
                break (plan_id.clone(), took);
            }
        }
        assert!(Instant::now() < deadline, "Watcher never recommended moving both servers: {audits:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    println!(
        "Watcher audit (create, poll, read plan and actions): {:.1} s; {} audit(s) until both servers were known",
        took.as_secs_f64(),
        audits.len()
    );
    for older in &audits[..audits.len() - 1] {
        if let Some(older_plan) = &older.plan_id {
            let (plan, _) = aos_db::drs_find_plan(&db, older_plan).await.unwrap().unwrap();
            assert_eq!(plan.state, DrsPlanState::Superseded, "a newer plan supersedes the older recommended one");
        }
    }
    let (plan, actions) = aos_db::drs_find_plan(&db, &plan_id).await.unwrap().unwrap();
    assert_eq!((plan.source.as_str(), plan.state), ("watcher", DrsPlanState::Recommended));
    assert!(plan.external_id.is_some(), "Watcher's action plan uuid is kept");
    let summary = plan.summary.clone().unwrap();
    assert!(
        summary["ignored"].as_array().unwrap().iter().any(|i| i["action_type"] == "change_nova_service_state"),
        "{summary}"
    );
    for action in &actions {
        assert_eq!(action.source_host.as_deref(), Some(HOSTS[0]));
        assert_eq!(action.target_host.as_deref(), Some(HOSTS[1]));
    }

    // Apply it with our executor.
    let task_id = apply_plan(&db, None, &plan_id, "test").await.expect("apply");
    let queue = aos_jobs::JobQueue::connect_amqp("amqp://guest:guest@127.0.0.1:5672/%2F", &format!("{prefix}-q"))
        .await
        .expect("queue");
    let runner = register_drs_tasks(
        JobRunner::new(db.clone(), queue.clone(), "test-worker", 1),
        db.clone(),
        client.clone(),
        ExecuteSettings { poll_interval: Duration::from_millis(500), ..ExecuteSettings::default() },
    );
    let started = Instant::now();
    let outcome = runner.process_one(task_id).await.expect("process");
    println!("applying {} live migration(s): {:.1} s", actions.len(), started.elapsed().as_secs_f64());
    let _ = queue.delete().await;
    queue.close().await;
    assert_eq!(outcome, ProcessOutcome::Succeeded);
    let (plan, actions) = aos_db::drs_find_plan(&db, &plan_id).await.unwrap().unwrap();
    assert_eq!(plan.state, DrsPlanState::Succeeded);
    assert_eq!(plan.task_id, Some(task_id.to_string()));
    for action in actions.iter().filter(|a| ids.contains(&a.server_id)) {
        assert_eq!(action.state, DrsActionState::Succeeded, "{action:?}");
        let server = client.server(&action.server_id).await.unwrap();
        assert_eq!(server.host.as_deref(), Some(HOSTS[1]));
    }
    // A plan that was applied cannot be applied again; the error names its state.
    let again = apply_plan(&db, None, &plan_id, "test").await.unwrap_err().to_string();
    assert!(again.contains("is succeeded: only a recommended plan can be applied"), "{again}");
    db.close().await.unwrap();
    database.cleanup().await;
}
