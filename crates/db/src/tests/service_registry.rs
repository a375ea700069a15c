//! The service instance registry.

use chrono::{TimeDelta, Utc};
use sea_orm::DatabaseConnection;

use crate::entity::ServiceInstanceState;
use crate::{
    deregister_service_instance, heartbeat_service_instance, list_service_instances, migrate_to,
    purge_stale_service_instances, register_service_instance,
};

async fn daemons_register_heartbeat_and_deregister(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let beat = register_service_instance(db, "beat", "ctl1", 100).await?;
    let worker = register_service_instance(db, "worker", "ctl1", 200).await?;

    assert!(heartbeat_service_instance(db, beat, ServiceInstanceState::Ready).await?);
    let listed = list_service_instances(db).await?;
    let summary: Vec<(&str, i64, ServiceInstanceState)> =
        listed.iter().map(|instance| (instance.role.as_str(), instance.pid, instance.state)).collect();
    assert_eq!(summary, [("beat", 100, ServiceInstanceState::Ready), ("worker", 200, ServiceInstanceState::Starting),]);

    // A restart that reuses the pid replaces the dead process's row.
    let beat_again = register_service_instance(db, "beat", "ctl1", 100).await?;
    assert_ne!(beat_again, beat);
    assert_eq!(list_service_instances(db).await?.len(), 2);
    assert!(!heartbeat_service_instance(db, beat, ServiceInstanceState::Ready).await?);

    deregister_service_instance(db, worker).await?;
    deregister_service_instance(db, worker).await?;
    assert_eq!(list_service_instances(db).await?.len(), 1);

    assert_eq!(purge_stale_service_instances(db, Utc::now() - TimeDelta::hours(1)).await?, 0);
    assert_eq!(purge_stale_service_instances(db, Utc::now() + TimeDelta::seconds(1)).await?, 1);
    Ok(())
}

/// Five roles of one all-in-one process (or daemons on several controllers) register at the
/// same instant; on InnoDB a delete-then-insert in one transaction deadlocked on the unique
/// index's gap lock. Several rounds, so an unlucky interleaving shows up.
async fn simultaneous_registrations_all_succeed(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    for round in 0..5u32 {
        let registrations = ["api", "listener", "beat", "worker", "agent"]
            .map(|role| async move { register_service_instance(db, role, "ctl1", 1000 + round).await });
        let [a, b, c, d, e] = registrations;
        let (a, b, c, d, e) = tokio::join!(a, b, c, d, e);
        for outcome in [a, b, c, d, e] {
            outcome?;
        }
    }
    assert_eq!(list_service_instances(db).await?.len(), 25);
    Ok(())
}

crate::db_test_suite!(daemons_register_heartbeat_and_deregister, simultaneous_registrations_all_succeed);
