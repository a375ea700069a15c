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
    let config = scratch.write_config(&test_config(database, "")?)?;
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
