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

crate::db_test_suite!(daemons_register_heartbeat_and_deregister);
