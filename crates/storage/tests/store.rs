//! Storages, bindings and storage sync on both backends (a fresh MariaDB database and a fresh
//! SQLite file per test), with real directories as storages.

use std::time::Duration;

use anyhow::Context as _;
use aos_db::{DatabaseConnection, ObservedComputeHost};
use aos_storage::{
    InstanceEntry, InstanceState, StateFile, StateFileOutcome, StorageError, StorageSyncSettings, bind_node,
    create_storage, delete_storage, find_storage, list_bindings, list_storages, storage_sync, storages_of_node,
    unbind_node, write_state_file,
};
use chrono::{DateTime, Utc};

/// Migrates the fresh database and adds compute nodes as node sync would.
async fn with_nodes(db: &DatabaseConnection, names: &[&str]) -> anyhow::Result<()> {
    aos_db::migrate_to(db, None).await?;
    let observed: Vec<ObservedComputeHost> = names
        .iter()
        .map(|name| ObservedComputeHost {
            host: (*name).to_owned(),
            service_id: None,
            status: "enabled".into(),
            state: "up".into(),
            forced_down: false,
            hypervisor_id: None,
        })
        .collect();
    aos_db::sync_nodes(db, None, "test", &observed).await?;
    Ok(())
}

async fn node_id(db: &DatabaseConnection, name: &str) -> anyhow::Result<i64> {
    Ok(aos_db::find_node(db, name).await?.with_context(|| format!("node {name}"))?.id)
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
}

async fn storages_are_created_listed_bound_unbound_and_deleted(db: &DatabaseConnection) -> anyhow::Result<()> {
    with_nodes(db, &["compute-1", "compute-2"]).await?;
    let nfs = create_storage(db, "nfs-a", "/mnt/nfs-a").await?;
    assert_eq!(nfs.reachable, None, "not checked yet");
    create_storage(db, "ceph", "/mnt/ceph").await?;
    assert!(
        matches!(create_storage(db, "nfs-a", "/elsewhere").await, Err(StorageError::StorageExists(name)) if name == "nfs-a")
    );
    assert!(matches!(create_storage(db, "rel", "mnt/x").await, Err(StorageError::Invalid { what: "path", .. })));
    assert!(matches!(create_storage(db, " ", "/mnt/x").await, Err(StorageError::Invalid { what: "name", .. })));
    let names: Vec<String> = list_storages(db).await?.into_iter().map(|storage| storage.name).collect();
    assert_eq!(names, ["ceph", "nfs-a"]);

    bind_node(db, "compute-1", "nfs-a").await?;
    bind_node(db, "compute-1", "ceph").await?;
    bind_node(db, "compute-2", "nfs-a").await?;
    assert!(matches!(bind_node(db, "compute-1", "nfs-a").await, Err(StorageError::AlreadyBound { .. })));
    assert!(
        matches!(bind_node(db, "nowhere", "nfs-a").await, Err(StorageError::NodeNotFound(name)) if name == "nowhere")
    );
    assert!(
        matches!(bind_node(db, "compute-1", "none").await, Err(StorageError::StorageNotFound(name)) if name == "none")
    );

    let compute_1 = node_id(db, "compute-1").await?;
    let of_node: Vec<String> =
        storages_of_node(db, compute_1).await?.into_iter().map(|binding| binding.storage.name).collect();
    assert_eq!(of_node, ["ceph", "nfs-a"]);
    assert!(storages_of_node(db, 999_999).await?.is_empty());
    let pairs: Vec<(String, String)> =
        list_bindings(db).await?.into_iter().map(|binding| (binding.storage.name, binding.node_name)).collect();
    assert_eq!(
        pairs,
        [
            ("ceph".into(), "compute-1".into()),
            ("nfs-a".into(), "compute-1".into()),
            ("nfs-a".into(), "compute-2".into())
        ]
    );

    unbind_node(db, "compute-1", "ceph").await?;
    assert!(matches!(unbind_node(db, "compute-1", "ceph").await, Err(StorageError::NotBound { .. })));
    delete_storage(db, "nfs-a").await?;
    assert!(find_storage(db, "nfs-a").await?.is_none());
    assert!(list_bindings(db).await?.is_empty(), "deleting a storage deletes its bindings");
    assert!(matches!(delete_storage(db, "nfs-a").await, Err(StorageError::StorageNotFound(_))));
    // The storage can be registered again, and the node bound again.
    create_storage(db, "nfs-a", "/mnt/nfs-a").await?;
    bind_node(db, "compute-1", "nfs-a").await?;
    Ok(())
}

async fn storage_sync_records_reachability_and_each_nodes_state_file_time(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    with_nodes(db, &["compute-1", "compute-2", "compute-3"]).await?;
    let scratch = tempfile::tempdir()?;
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared)?;
    let shared_path = shared.to_str().context("utf-8 path")?;
    let gone = scratch.path().join("not-mounted");
    let file_path = scratch.path().join("a-file");
    std::fs::write(&file_path, "not a directory")?;
    create_storage(db, "shared", shared_path).await?;
    create_storage(db, "gone", gone.to_str().context("utf-8 path")?).await?;
    create_storage(db, "file", file_path.to_str().context("utf-8 path")?).await?;
    for node in ["compute-1", "compute-2", "compute-3"] {
        bind_node(db, node, "shared").await?;
    }
    bind_node(db, "compute-1", "gone").await?;

    // compute-1 wrote a good file, compute-2 a broken one, compute-3 none.
    let written_at = at("2026-11-23T15:04:05.123456Z");
    let file = StateFile {
        format: 1,
        node: "compute-1".into(),
        written_at,
        instances: vec![InstanceEntry { id: "server-1".into(), state: InstanceState::Running }],
    };
    write_state_file(&shared, &file).await?;
    std::fs::write(shared.join("aos-node-state/compute-2.json"), "{\"format\": 1, \"node\": ")?;

    let lease = aos_db::lease_acquire_or_renew(db, "beat", "test-holder", Duration::from_secs(30), Utc::now()).await?;
    let generation = match lease {
        aos_db::LeaseState::Held { generation, .. } => generation,
        other => anyhow::bail!("lease not acquired: {other:?}"),
    };
    let settings = StorageSyncSettings { lease: Some(("beat".into(), generation)), ..StorageSyncSettings::default() };
    let report = storage_sync(db, &settings).await?;
    assert_eq!(report.reachable(), ["shared"]);
    let mut unreachable = report.unreachable();
    unreachable.sort_unstable();
    assert_eq!(unreachable, ["file", "gone"]);
    assert_eq!(report.state_file("shared", "compute-1"), Some(&StateFileOutcome::Found { written_at, instances: 1 }));
    assert!(
        matches!(report.state_file("shared", "compute-2"), Some(StateFileOutcome::Unreadable(reason)) if reason.contains("malformed"))
    );
    assert_eq!(report.state_file("shared", "compute-3"), Some(&StateFileOutcome::Missing));
    assert_eq!(report.state_file("gone", "compute-1"), None, "an unreachable storage's files are not read");

    let storages = list_storages(db).await?;
    for storage in &storages {
        assert_eq!(storage.reachable, Some(storage.name == "shared"), "{storage:?}");
        assert!(storage.last_checked_at.is_some(), "{storage:?}");
    }
    let compute_1 = storages_of_node(db, node_id(db, "compute-1").await?).await?;
    let on_shared = compute_1.iter().find(|binding| binding.storage.name == "shared").context("bound")?;
    assert_eq!(on_shared.state_file_at, Some(written_at));
    let on_gone = compute_1.iter().find(|binding| binding.storage.name == "gone").context("bound")?;
    assert_eq!(on_gone.state_file_at, None);
    for node in ["compute-2", "compute-3"] {
        let bindings = storages_of_node(db, node_id(db, node).await?).await?;
        assert_eq!(bindings[0].state_file_at, None, "{node}");
    }

    // A newer file is recorded by the next sync; a file that disappears keeps the newest seen.
    let newer = at("2026-11-23T15:05:05Z");
    write_state_file(&shared, &StateFile { written_at: newer, ..file.clone() }).await?;
    storage_sync(db, &settings).await?;
    let bindings = storages_of_node(db, node_id(db, "compute-1").await?).await?;
    assert_eq!(
        bindings.iter().find(|binding| binding.storage.name == "shared").context("bound")?.state_file_at,
        Some(newer)
    );
    std::fs::remove_file(shared.join("aos-node-state/compute-1.json"))?;
    let report = storage_sync(db, &settings).await?;
    assert_eq!(report.state_file("shared", "compute-1"), Some(&StateFileOutcome::Missing));
    let bindings = storages_of_node(db, node_id(db, "compute-1").await?).await?;
    assert_eq!(
        bindings.iter().find(|binding| binding.storage.name == "shared").context("bound")?.state_file_at,
        Some(newer)
    );

    // A storage that comes back is reachable again.
    std::fs::create_dir(&gone)?;
    let report = storage_sync(db, &settings).await?;
    assert!(report.reachable().contains(&"gone"), "{report:?}");
    Ok(())
}

async fn storage_sync_under_a_lost_lease_writes_nothing(db: &DatabaseConnection) -> anyhow::Result<()> {
    with_nodes(db, &["compute-1"]).await?;
    let scratch = tempfile::tempdir()?;
    create_storage(db, "shared", scratch.path().to_str().context("utf-8 path")?).await?;
    aos_db::lease_acquire_or_renew(db, "beat", "someone-else", Duration::from_secs(30), Utc::now()).await?;
    let stale = StorageSyncSettings { lease: Some(("beat".into(), 999)), ..StorageSyncSettings::default() };
    let outcome = storage_sync(db, &stale).await;
    assert!(matches!(outcome, Err(StorageError::Db(aos_db::DbError::LeaseLost { .. }))), "{outcome:?}");
    let storage = find_storage(db, "shared").await?.context("created")?;
    assert_eq!(storage.reachable, None, "nothing recorded without the lease");
    assert_eq!(storage.last_checked_at, None);
    Ok(())
}

aos_db::db_test_suite!(
    storages_are_created_listed_bound_unbound_and_deleted,
    storage_sync_records_reachability_and_each_nodes_state_file_time,
    storage_sync_under_a_lost_lease_writes_nothing,
);
