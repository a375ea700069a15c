//! `storage create|list|delete|bind|unbind|sync`: registering availability storages, binding
//! nodes to them, and checking them now, with a real directory as the storage.

use aos_db::ObservedComputeHost;

use crate::support::{Backend, Fixture, on_both_backends};

/// Adds compute nodes as node sync would (the storage commands refer to nodes by name).
async fn add_nodes(fixture: &Fixture, names: &[&str]) {
    let db = fixture.database.connect().await.expect("connect to the test database");
    let observed: Vec<ObservedComputeHost> =
        names.iter().map(|name| ObservedComputeHost::up_and_enabled(*name, None)).collect();
    aos_db::sync_nodes(&db, None, "test", &observed).await.expect("add nodes");
    db.close().await.expect("close the test connection");
}

async fn storages_are_created_bound_listed_unbound_and_deleted(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());
    add_nodes(&fixture, &["compute-1", "compute-2"]).await;
    let mount = fixture.directory.path().join("mnt-nfs");
    std::fs::create_dir(&mount).expect("storage directory");
    let mount = mount.to_str().expect("utf-8 path");

    let created = fixture.run(&["storage", "create", "nfs-a", mount]);
    assert!(created.succeeded(), "{}", created.report());
    assert!(created.stdout.contains("storage nfs-a created"), "{}", created.report());
    let again = fixture.run(&["storage", "create", "nfs-a", "/elsewhere"]);
    assert_eq!(again.code, Some(2), "{}", again.report());
    assert!(again.stderr.contains("already exists"), "{}", again.report());
    let relative = fixture.run(&["storage", "create", "rel", "mnt/x"]);
    assert_eq!(relative.code, Some(2), "{}", relative.report());
    assert!(relative.stderr.contains("absolute path"), "{}", relative.report());

    for node in ["compute-1", "compute-2"] {
        let bound = fixture.run(&["storage", "bind", node, "nfs-a"]);
        assert!(bound.succeeded(), "{}", bound.report());
    }
    let twice = fixture.run(&["storage", "bind", "compute-1", "nfs-a"]);
    assert_eq!(twice.code, Some(2), "{}", twice.report());
    let unknown_node = fixture.run(&["storage", "bind", "no-such-node", "nfs-a"]);
    assert_eq!(unknown_node.code, Some(2), "{}", unknown_node.report());
    assert!(unknown_node.stderr.contains("no node named \"no-such-node\""), "{}", unknown_node.report());
    let unknown_storage = fixture.run(&["storage", "bind", "compute-1", "no-such-storage"]);
    assert_eq!(unknown_storage.code, Some(2), "{}", unknown_storage.report());

    let list = fixture.run(&["storage", "list"]);
    assert!(list.succeeded(), "{}", list.report());
    list.assert_row(&["nfs-a", mount, "not checked", "-", "compute-1, compute-2"]);
    list.assert_row(&["nfs-a", "compute-1", "-"]);

    let unbound = fixture.run(&["storage", "unbind", "compute-2", "nfs-a"]);
    assert!(unbound.succeeded(), "{}", unbound.report());
    let not_bound = fixture.run(&["storage", "unbind", "compute-2", "nfs-a"]);
    assert_eq!(not_bound.code, Some(2), "{}", not_bound.report());
    fixture.run(&["storage", "list"]).assert_row(&["nfs-a", mount, "not checked", "-", "compute-1"]);

    let deleted = fixture.run(&["storage", "delete", "nfs-a"]);
    assert!(deleted.succeeded(), "{}", deleted.report());
    let list = fixture.run(&["storage", "list"]);
    assert_eq!(list.table_rows().len(), 1, "only the header is left:\n{}", list.report());
    let missing = fixture.run(&["storage", "delete", "nfs-a"]);
    assert_eq!(missing.code, Some(2), "{}", missing.report());
    fixture.cleanup().await;
}

async fn storage_sync_reports_and_records_reachability_and_state_files(backend: Backend) {
    let fixture = Fixture::new(backend, "").await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());
    add_nodes(&fixture, &["compute-1", "compute-2"]).await;
    let mount = fixture.directory.path().join("mnt-nfs");
    std::fs::create_dir(&mount).expect("storage directory");
    let gone = fixture.directory.path().join("not-mounted");
    let mount_text = mount.to_str().expect("utf-8 path");
    assert!(fixture.run(&["storage", "create", "nfs-a", mount_text]).succeeded());
    assert!(fixture.run(&["storage", "create", "gone", gone.to_str().expect("utf-8 path")]).succeeded());
    for node in ["compute-1", "compute-2"] {
        assert!(fixture.run(&["storage", "bind", node, "nfs-a"]).succeeded());
    }
    // The documented format, written as a node agent in any language would.
    std::fs::create_dir(mount.join("aos-node-state")).expect("state directory");
    std::fs::write(
        mount.join("aos-node-state/compute-1.json"),
        r#"{"format": 1, "node": "compute-1", "written_at": "2026-11-23T15:04:05Z",
            "instances": [{"id": "server-1", "state": "running"}]}"#,
    )
    .expect("write the state file");

    let sync = fixture.run(&["storage", "sync"]);
    assert!(sync.succeeded(), "{}", sync.report());
    assert!(sync.stdout.contains("storage sync: 1 reachable, 1 unreachable"), "{}", sync.report());
    sync.assert_row(&["nfs-a", "compute-1", "found", "written 2026-11-23T15:04:05+00:00, 1 instances"]);
    sync.assert_row(&["nfs-a", "compute-2", "missing", ""]);

    let list = fixture.run(&["storage", "list"]);
    let rows = list.table_rows();
    let nfs = rows.iter().find(|row| row[0] == "nfs-a" && row.len() == 5).expect("nfs-a listed");
    assert_eq!(nfs[2], "yes", "{}", list.report());
    assert_ne!(nfs[3], "-", "checked: {}", list.report());
    let gone_row = rows.iter().find(|row| row[0] == "gone").expect("gone listed");
    assert_eq!(gone_row[2], "no", "{}", list.report());
    list.assert_row(&["nfs-a", "compute-1", "2026-11-23 15:04:05"]);
    list.assert_row(&["nfs-a", "compute-2", "-"]);
    fixture.cleanup().await;
}

on_both_backends!(
    storages_are_created_bound_listed_unbound_and_deleted,
    storage_sync_reports_and_records_reachability_and_state_files,
);
