//! Storage sync (`[storage_sync]`): keeps each registered storage's reachability and each
//! bound node's state-file freshness current in the database. The beat runs it every
//! `sync_interval` while it holds its lease; `aos-cloud-manager storage sync` runs it once.
//!
//! Every check touches the file system under a timeout on a blocking thread (a hung NFS
//! mount must not stall the beat), storages are checked concurrently, and the results are
//! written in one transaction guarded by the caller's lease.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use aos_db::entity::{availability_storage, node_storage_binding};
use aos_db::{begin_write, db_time, guard_lease};

use crate::state_file::{DEFAULT_IO_TIMEOUT, StateFileError, read_state_file_within, run_blocking};
use crate::store::{NodeStorage, Storage, StorageError, list_bindings, list_storages};

/// How one storage sync runs.
#[derive(Debug, Clone)]
pub struct StorageSyncSettings {
    /// Bound on each file-system check (the storage directory, each state file).
    pub io_timeout: Duration,
    /// The caller's lease (name, generation) guarding the writes; `None` for an operator's
    /// one-off sync (safe: sync only records what it observed).
    pub lease: Option<(String, i64)>,
}

impl Default for StorageSyncSettings {
    fn default() -> Self {
        Self { io_timeout: DEFAULT_IO_TIMEOUT, lease: None }
    }
}

/// What one sync observed, per storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageSyncReport {
    pub storages: Vec<StorageCheck>,
}

impl StorageSyncReport {
    /// Names of the storages found reachable.
    pub fn reachable(&self) -> Vec<&str> {
        self.storages.iter().filter(|check| check.reachable).map(|check| check.name.as_str()).collect()
    }

    /// Names of the storages found unreachable.
    pub fn unreachable(&self) -> Vec<&str> {
        self.storages.iter().filter(|check| !check.reachable).map(|check| check.name.as_str()).collect()
    }

    /// The outcome for `node` on the storage named `storage`.
    pub fn state_file(&self, storage: &str, node: &str) -> Option<&StateFileOutcome> {
        self.storages
            .iter()
            .find(|check| check.name == storage)?
            .nodes
            .iter()
            .find(|check| check.node == node)
            .map(|check| &check.outcome)
    }
}

/// One storage's check.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageCheck {
    pub name: String,
    pub path: String,
    /// The path exists, is a directory, and could be listed within the timeout.
    pub reachable: bool,
    /// Why it is not reachable.
    pub error: Option<String>,
    /// Each bound node's state file (empty when the storage is unreachable).
    pub nodes: Vec<NodeStateCheck>,
}

/// One bound node's state file on one storage.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStateCheck {
    pub node: String,
    pub outcome: StateFileOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StateFileOutcome {
    /// Read; its `written_at` is recorded as the binding's `state_file_at`.
    Found { written_at: DateTime<Utc>, instances: usize },
    /// No state file of this node on the storage (`state_file_at` keeps the newest seen).
    Missing,
    /// There is a file but it cannot be used (malformed, another format, unreadable, hung).
    Unreadable(String),
}

/// Checks every registered storage and every bound node's state file, and records the
/// results: `reachable` and `last_checked_at` of each storage, `state_file_at` of each
/// binding whose state file was read. Fails only when the database does (or the lease is
/// lost); file-system problems are results, not errors.
pub async fn storage_sync(
    db: &DatabaseConnection,
    settings: &StorageSyncSettings,
) -> Result<StorageSyncReport, StorageError> {
    let storages = list_storages(db).await?;
    let bindings = list_bindings(db).await?;
    let checks = futures::future::join_all(storages.iter().map(|storage| {
        let bound: Vec<&NodeStorage> = bindings.iter().filter(|binding| binding.storage.id == storage.id).collect();
        check_storage(storage, bound, settings.io_timeout)
    }))
    .await;

    let now = db_time(Utc::now());
    let transaction = begin_write(db).await?;
    if let Some((name, generation)) = &settings.lease {
        guard_lease(&transaction, name, *generation).await?;
    }
    for (storage, check) in storages.iter().zip(&checks) {
        availability_storage::Entity::update_many()
            .set(availability_storage::ActiveModel {
                reachable: Set(Some(check.reachable)),
                last_checked_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(availability_storage::Column::Id.eq(storage.id))
            .exec(&transaction)
            .await?;
        for node in &check.nodes {
            let StateFileOutcome::Found { written_at, .. } = node.outcome else { continue };
            let Some(binding) =
                bindings.iter().find(|binding| binding.storage.id == storage.id && binding.node_name == node.node)
            else {
                continue;
            };
            let written_at = db_time(written_at);
            if binding.state_file_at == Some(written_at) {
                continue;
            }
            node_storage_binding::Entity::update_many()
                .set(node_storage_binding::ActiveModel { state_file_at: Set(Some(written_at)), ..Default::default() })
                .filter(node_storage_binding::Column::NodeId.eq(binding.node_id))
                .filter(node_storage_binding::Column::StorageId.eq(storage.id))
                .exec(&transaction)
                .await?;
        }
    }
    transaction.commit().await?;
    Ok(StorageSyncReport { storages: checks })
}

async fn check_storage(storage: &Storage, bound: Vec<&NodeStorage>, timeout: Duration) -> StorageCheck {
    let path = PathBuf::from(&storage.path);
    let mut check = StorageCheck {
        name: storage.name.clone(),
        path: storage.path.clone(),
        reachable: false,
        error: None,
        nodes: Vec::new(),
    };
    if let Err(error) = check_reachable(&path, timeout).await {
        check.error = Some(error.to_string());
        return check;
    }
    check.reachable = true;
    for binding in bound {
        let outcome = match read_state_file_within(&path, &binding.node_name, timeout).await {
            Ok(Some(file)) => StateFileOutcome::Found { written_at: file.written_at, instances: file.instances.len() },
            Ok(None) => StateFileOutcome::Missing,
            Err(error) => StateFileOutcome::Unreadable(error.to_string()),
        };
        check.nodes.push(NodeStateCheck { node: binding.node_name.clone(), outcome });
    }
    check
}

/// The storage path exists, is a directory, and can be listed, within `timeout`.
pub async fn check_reachable(path: &Path, timeout: Duration) -> Result<(), StateFileError> {
    let directory = path.to_owned();
    run_blocking(path, timeout, move || {
        let metadata =
            std::fs::metadata(&directory).map_err(|source| StateFileError::Io { path: directory.clone(), source })?;
        if !metadata.is_dir() {
            return Err(StateFileError::StorageMissing { path: directory });
        }
        let mut entries =
            std::fs::read_dir(&directory).map_err(|source| StateFileError::Io { path: directory.clone(), source })?;
        // Reading one entry proves the directory can be listed, not only opened.
        if let Some(Err(source)) = entries.next() {
            return Err(StateFileError::Io { path: directory, source });
        }
        Ok(())
    })
    .await
}
