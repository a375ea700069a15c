//! The active beat runs storage sync every `[storage_sync] sync_interval`: a registered
//! storage is marked reachable and a bound node's state file time is recorded, on both
//! backends.

use std::time::Duration;

use anyhow::Context as _;
use aos_db::ObservedComputeHost;
use aos_storage::{InstanceEntry, InstanceState, StateFile};
use aos_testkit::testing::TestDatabase;
use aos_testkit::{DaemonProcess, Scratch, test_config, wait_until};

const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-beat");

async fn the_active_beat_records_storage_reachability_and_state_files(database: &TestDatabase) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let host = ObservedComputeHost {
        host: "compute-1".into(),
        service_id: None,
        status: "enabled".into(),
        state: "up".into(),
        forced_down: false,
        hypervisor_id: None,
    };
    aos_db::sync_nodes(&db, None, "test", &[host]).await?;
    let scratch = Scratch::new()?;
    let storage = scratch.path().join("storage");
    std::fs::create_dir(&storage)?;
    aos_storage::create_storage(&db, "shared", storage.to_str().context("utf-8 path")?).await?;
    aos_storage::bind_node(&db, "compute-1", "shared").await?;
    let file =
        StateFile::new("compute-1", vec![InstanceEntry { id: "server-1".into(), state: InstanceState::Running }]);
    aos_storage::write_state_file(&storage, &file).await?;

    // Node sync off: no cloud needed here.
    let extra = "[node_sync]\nenabled = False\n\n[storage_sync]\nenabled = True\nsync_interval = 1\n";
    let config = scratch.write_config(&test_config(database, extra)?)?;
    let mut beat = DaemonProcess::spawn(BINARY, &config, scratch.path().join("beat.log"))?;
    let node_id = aos_db::find_node(&db, "compute-1").await?.context("node")?.id;
    let recorded = wait_until(Duration::from_secs(60), "the beat to record the state file", || async {
        let bindings = aos_storage::storages_of_node(&db, node_id).await?;
        Ok(bindings.into_iter().find(|binding| binding.state_file_at.is_some()))
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", beat.log()))?;
    assert_eq!(recorded.state_file_at, Some(aos_db::db_time(file.written_at)));
    assert_eq!(recorded.storage.reachable, Some(true));
    assert!(recorded.storage.last_checked_at.is_some());

    beat.sigterm()?;
    assert!(beat.wait_exit(Duration::from_secs(30)).await?.success(), "{}", beat.log());
    db.close().await?;
    aos_testkit::delete_test_queues(database).await;
    Ok(())
}

#[tokio::test]
async fn the_active_beat_records_storage_reachability_and_state_files_on_mariadb() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let outcome = the_active_beat_records_storage_reachability_and_state_files(&database).await;
    database.cleanup().await;
    outcome
}

#[tokio::test]
async fn the_active_beat_records_storage_reachability_and_state_files_on_sqlite() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    the_active_beat_records_storage_reachability_and_state_files(&database).await
}
