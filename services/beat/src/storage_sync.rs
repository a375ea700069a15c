//! Storage sync (`[storage_sync]`): every `sync_interval`, while this beat holds its lease,
//! check each availability storage's reachability and record each bound node's newest state
//! file (`aos_storage::storage_sync`, writes guarded by the lease). File-system checks run on
//! blocking threads under a timeout, so a hung NFS mount delays nothing else of the beat.

use aos_storage::{StateFileOutcome, StorageSyncReport, StorageSyncSettings};

/// One sync. `lease` is the beat's (name, generation); `None` for an operator's one-off sync.
pub async fn sync_once(
    db: &aos_db::DatabaseConnection,
    lease: Option<(&str, i64)>,
) -> anyhow::Result<StorageSyncReport> {
    let settings = StorageSyncSettings {
        lease: lease.map(|(name, generation)| (name.to_owned(), generation)),
        ..StorageSyncSettings::default()
    };
    Ok(aos_storage::storage_sync(db, &settings).await?)
}

/// Logs what an operator must see: unreachable storages and unusable state files (at warn),
/// the rest at debug.
pub fn log_report(report: &StorageSyncReport) {
    for storage in &report.storages {
        if !storage.reachable {
            tracing::warn!(storage = %storage.name, path = %storage.path, error = storage.error.as_deref().unwrap_or(""), "availability storage unreachable");
            continue;
        }
        for node in &storage.nodes {
            match &node.outcome {
                StateFileOutcome::Unreadable(reason) => {
                    tracing::warn!(storage = %storage.name, node = %node.node, %reason, "node state file unusable")
                }
                outcome => tracing::debug!(storage = %storage.name, node = %node.node, ?outcome, "node state file"),
            }
        }
    }
}
