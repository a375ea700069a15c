//! Process-level life of `aos-cloud-manager-worker`, on MariaDB and SQLite.

use aos_testkit::testing::TestDatabase;

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-worker");

aos_testkit::daemon_lifecycle_tests!(BINARY, "worker");

/// The worker daemon consumes the job queue: a task of a kind this build has no handler for
/// is claimed and ends `failed` with a message naming the kind (never silently dropped).
async fn a_running_worker_fails_a_task_of_an_unknown_kind_with_a_clear_error(
    database: &TestDatabase,
) -> anyhow::Result<()> {
    use std::time::Duration;

    use aos_testkit::{DaemonProcess, Scratch, test_config, test_job_queue, wait_until};

    let db = database.connect_migrated().await?;
    let scratch = Scratch::new()?;
    let port = aos_testkit::free_port()?;
    let config = scratch.write_config(&test_config(database, &format!("[worker]\nstatus_port = {port}\n"))?)?;
    let mut worker = DaemonProcess::spawn(BINARY, &config, scratch.path().join("worker.log"))?;
    let queue = test_job_queue(database, &db).await?;
    let task_id = aos_jobs::enqueue(&db, &queue, aos_jobs::NewTask::new("no-such-kind", serde_json::json!({}))).await?;
    let error = wait_until(Duration::from_secs(60), "the worker to finish the task", || async {
        let task = aos_jobs::find_task(&db, task_id).await?;
        Ok(task.filter(|task| task.state.is_final()).map(|task| (task.state, task.error)))
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", worker.log()))?;
    assert_eq!(error.0, aos_db::entity::TaskState::Failed);
    assert!(error.1.unwrap_or_default().contains("no-such-kind"), "the error names the unknown kind");
    // The run is counted in the worker's Prometheus metrics, with its duration.
    let (status, metrics) =
        aos_testkit::http_get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "/metrics").await?;
    assert_eq!(status, 200);
    let counted = "aos_task_runs_total{kind=\"no-such-kind\",outcome=\"failed\"} 1";
    assert!(metrics.lines().any(|line| line == counted), "{counted} missing:\n{metrics}");
    assert!(metrics.contains("aos_task_run_duration_seconds_bucket{kind=\"no-such-kind\",outcome=\"failed\""));
    assert!(metrics.lines().any(|line| line == "aos_tasks{kind=\"no-such-kind\",state=\"failed\"} 1"), "{metrics}");
    worker.sigterm()?;
    assert!(worker.wait_exit(Duration::from_secs(30)).await?.success());
    queue.close().await;
    db.close().await?;
    aos_testkit::delete_test_queues(database).await;
    Ok(())
}

#[tokio::test]
async fn a_running_worker_fails_a_task_of_an_unknown_kind_on_sqlite() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    a_running_worker_fails_a_task_of_an_unknown_kind_with_a_clear_error(&database).await
}

#[tokio::test]
async fn a_running_worker_fails_a_task_of_an_unknown_kind_on_mariadb_and_rabbitmq() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = a_running_worker_fails_a_task_of_an_unknown_kind_with_a_clear_error(&database).await;
    database.cleanup().await;
    outcome
}

/// `balance_aggregate` (aos-balance) is a kind the worker knows: a plan recorded by a CLI that
/// died mid-run is taken over by the workers. Without OpenStack yet, the task is retried later
/// (not failed for lack of a handler).
#[tokio::test]
async fn a_balancing_task_waits_for_openstack_instead_of_failing() -> anyhow::Result<()> {
    use std::time::Duration;

    use aos_testkit::{DaemonProcess, Scratch, test_config, test_job_queue, wait_until};

    let database = TestDatabase::sqlite().await?;
    let db = database.connect_migrated().await?;
    let scratch = Scratch::new()?;
    let config = scratch.write_config(&test_config(&database, "")?)?;
    let mut worker = DaemonProcess::spawn(BINARY, &config, scratch.path().join("worker.log"))?;
    let queue = test_job_queue(&database, &db).await?;
    let payload = serde_json::json!({ "aggregate": "agg-1", "migrations": [], "actor": "test" });
    let task_id =
        aos_jobs::enqueue(&db, &queue, aos_jobs::NewTask::new(aos_balance::BALANCE_AGGREGATE, payload)).await?;
    let task = wait_until(Duration::from_secs(60), "the worker to try the task once", || async {
        Ok(aos_jobs::find_task(&db, task_id).await?.filter(|task| task.attempts >= 1 && task.error.is_some()))
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", worker.log()))?;
    let error = task.error.unwrap_or_default();
    assert!(error.contains("not connected to OpenStack"), "{error}");
    assert!(!task.state.is_final(), "retried later, not failed: {:?}", task.state);
    worker.sigterm()?;
    assert!(worker.wait_exit(Duration::from_secs(30)).await?.success());
    queue.close().await;
    db.close().await?;
    Ok(())
}
