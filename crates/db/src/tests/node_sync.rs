//! Node sync mirrors Nova's compute hosts into `nodes`, keeping history.

use sea_orm::DatabaseConnection;

use crate::{ObservedComputeHost, find_node, list_nodes, migrate_to, node_history, sync_nodes};

fn host(name: &str, state: &str) -> ObservedComputeHost {
    ObservedComputeHost {
        host: name.into(),
        service_id: Some(format!("svc-{name}")),
        status: "enabled".into(),
        state: state.into(),
        forced_down: false,
        hypervisor_id: Some(format!("hv-{name}")),
    }
}

async fn sync_adds_updates_and_marks_removed_hosts_keeping_their_history(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let first = sync_nodes(db, None, "test", &[host("fake-1", "up"), host("fake-2", "up")]).await?;
    assert_eq!(first.added, ["fake-1", "fake-2"]);

    let second = sync_nodes(db, None, "test", &[host("fake-1", "up"), host("fake-2", "up")]).await?;
    assert_eq!(second.unchanged, 2, "a sync that finds nothing new writes nothing");

    let third = sync_nodes(db, None, "test", &[host("fake-1", "down")]).await?;
    assert_eq!(third.updated, ["fake-1"]);
    assert_eq!(third.removed, ["fake-2"]);
    let names: Vec<String> = list_nodes(db).await?.into_iter().map(|node| node.name).collect();
    assert_eq!(names, ["fake-1", "fake-2"], "a host gone from Nova keeps its row");
    let gone = find_node(db, "fake-2").await?.expect("row kept");
    assert!(gone.removed_from_nova);
    let kinds: Vec<String> = node_history(db, gone.id, 10).await?.into_iter().map(|event| event.kind).collect();
    assert_eq!(kinds, ["nova.sync.removed", "nova.sync.added"], "newest first");

    let fourth = sync_nodes(db, None, "test", &[host("fake-1", "down"), host("fake-2", "up")]).await?;
    assert_eq!(fourth.returned, ["fake-2"]);
    assert_eq!(find_node(db, "fake-1").await?.and_then(|node| node.nova_state).as_deref(), Some("down"));
    Ok(())
}

async fn sync_under_a_lost_lease_writes_nothing(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let now = chrono::Utc::now();
    let crate::LeaseState::Held { generation, .. } =
        crate::lease_acquire_or_renew(db, "beat", "a", std::time::Duration::from_secs(30), now).await?
    else {
        anyhow::bail!("first holder must get the lease");
    };
    let error = sync_nodes(db, Some(("beat", generation + 1)), "test", &[host("fake-1", "up")]).await;
    assert!(matches!(error, Err(crate::DbError::LeaseLost { .. })), "{error:?}");
    assert!(list_nodes(db).await?.is_empty());
    Ok(())
}

crate::db_test_suite!(
    sync_adds_updates_and_marks_removed_hosts_keeping_their_history,
    sync_under_a_lost_lease_writes_nothing
);
