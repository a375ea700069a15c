//! The registered availability storages (`availability_storages`) and which nodes write their
//! state files to which storage (`node_storage_bindings`). Names are the operator's handles:
//! a storage by its unique name, a node by Nova's host name.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};

use aos_db::entity::{availability_storage, node, node_storage_binding};
use aos_db::{DbError, begin_write, db_time};

/// A registered storage (the table's row).
pub type Storage = availability_storage::Model;

/// Why a storage operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no storage named {0:?}")]
    StorageNotFound(String),
    #[error("no node named {0:?}")]
    NodeNotFound(String),
    #[error("a storage named {0:?} already exists")]
    StorageExists(String),
    #[error("node {node:?} is already bound to storage {storage:?}")]
    AlreadyBound { node: String, storage: String },
    #[error("node {node:?} is not bound to storage {storage:?}")]
    NotBound { node: String, storage: String },
    #[error("invalid storage {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sea_orm::DbErr> for StorageError {
    fn from(error: sea_orm::DbErr) -> Self {
        StorageError::Db(DbError::from(error))
    }
}

/// One node's binding to one storage, with names for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStorage {
    pub storage: Storage,
    pub node_id: i64,
    pub node_name: String,
    /// `written_at` of the node's newest state file seen on this storage; `None` = none yet.
    pub state_file_at: Option<DateTime<Utc>>,
}

/// The longest name and path the table holds.
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 1024;

/// Registers a storage `name` mounted at the absolute `path` on the nodes (and the
/// controllers that check it). Not checked for reachability here: storage sync does that.
pub async fn create_storage(db: &DatabaseConnection, name: &str, path: &str) -> Result<Storage, StorageError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
        return Err(StorageError::Invalid {
            what: "name",
            reason: format!("{name:?}: 1 to {NAME_MAX} characters, no control characters"),
        });
    }
    if !path.starts_with('/') || path.chars().count() > PATH_MAX || path.contains('\0') {
        return Err(StorageError::Invalid {
            what: "path",
            reason: format!("{path:?}: an absolute path of at most {PATH_MAX} characters"),
        });
    }
    let transaction = begin_write(db).await.map_err(StorageError::Db)?;
    if find_storage_in(&transaction, name).await?.is_some() {
        return Err(StorageError::StorageExists(name.to_owned()));
    }
    let created = availability_storage::ActiveModel {
        name: Set(name.to_owned()),
        path: Set(path.to_owned()),
        reachable: Set(None),
        last_checked_at: Set(None),
        created_at: Set(db_time(Utc::now())),
        ..Default::default()
    }
    .insert(&transaction)
    .await
    .map_err(|error| {
        // Another session created the same name between our check and insert.
        let error = DbError::from(error);
        if error.is_unique_violation() { StorageError::StorageExists(name.to_owned()) } else { error.into() }
    })?;
    transaction.commit().await?;
    Ok(created)
}

/// Every storage, by name.
pub async fn list_storages(db: &DatabaseConnection) -> Result<Vec<Storage>, StorageError> {
    Ok(availability_storage::Entity::find().order_by_asc(availability_storage::Column::Name).all(db).await?)
}

/// The storage named `name`.
pub async fn find_storage(db: &DatabaseConnection, name: &str) -> Result<Option<Storage>, StorageError> {
    find_storage_in(db, name).await
}

async fn find_storage_in<C: sea_orm::ConnectionTrait>(db: &C, name: &str) -> Result<Option<Storage>, StorageError> {
    Ok(availability_storage::Entity::find().filter(availability_storage::Column::Name.eq(name)).one(db).await?)
}

/// Deletes the storage named `name` and its bindings (in one transaction; the foreign keys
/// cascade too, but SQLite enforces them only when asked to).
pub async fn delete_storage(db: &DatabaseConnection, name: &str) -> Result<(), StorageError> {
    let transaction = begin_write(db).await?;
    let storage =
        find_storage_in(&transaction, name).await?.ok_or_else(|| StorageError::StorageNotFound(name.to_owned()))?;
    node_storage_binding::Entity::delete_many()
        .filter(node_storage_binding::Column::StorageId.eq(storage.id))
        .exec(&transaction)
        .await?;
    availability_storage::Entity::delete_by_id(storage.id).exec(&transaction).await?;
    transaction.commit().await?;
    Ok(())
}

/// Binds the node named `node_name` to the storage named `storage_name`: the node writes its
/// state file there, and the HA core reads it there.
pub async fn bind_node(
    db: &DatabaseConnection,
    node_name: &str,
    storage_name: &str,
) -> Result<NodeStorage, StorageError> {
    let transaction = begin_write(db).await?;
    let (node, storage) = node_and_storage(&transaction, node_name, storage_name).await?;
    let already = node_storage_binding::Entity::find()
        .filter(node_storage_binding::Column::NodeId.eq(node.id))
        .filter(node_storage_binding::Column::StorageId.eq(storage.id))
        .one(&transaction)
        .await?;
    if already.is_some() {
        return Err(StorageError::AlreadyBound { node: node.name, storage: storage.name });
    }
    node_storage_binding::ActiveModel {
        node_id: Set(node.id),
        storage_id: Set(storage.id),
        state_file_at: Set(None),
        ..Default::default()
    }
    .insert(&transaction)
    .await
    .map_err(|error| {
        let error = DbError::from(error);
        if error.is_unique_violation() {
            StorageError::AlreadyBound { node: node.name.clone(), storage: storage.name.clone() }
        } else {
            error.into()
        }
    })?;
    transaction.commit().await?;
    Ok(NodeStorage { storage, node_id: node.id, node_name: node.name, state_file_at: None })
}

/// Removes the binding of the node named `node_name` to the storage named `storage_name`.
pub async fn unbind_node(db: &DatabaseConnection, node_name: &str, storage_name: &str) -> Result<(), StorageError> {
    let transaction = begin_write(db).await?;
    let (node, storage) = node_and_storage(&transaction, node_name, storage_name).await?;
    let deleted = node_storage_binding::Entity::delete_many()
        .filter(node_storage_binding::Column::NodeId.eq(node.id))
        .filter(node_storage_binding::Column::StorageId.eq(storage.id))
        .exec(&transaction)
        .await?
        .rows_affected;
    if deleted == 0 {
        return Err(StorageError::NotBound { node: node.name, storage: storage.name });
    }
    transaction.commit().await?;
    Ok(())
}

async fn node_and_storage<C: sea_orm::ConnectionTrait>(
    db: &C,
    node_name: &str,
    storage_name: &str,
) -> Result<(node::Model, Storage), StorageError> {
    let node = node::Entity::find()
        .filter(node::Column::Name.eq(node_name))
        .one(db)
        .await?
        .ok_or_else(|| StorageError::NodeNotFound(node_name.to_owned()))?;
    let storage = find_storage_in(db, storage_name)
        .await?
        .ok_or_else(|| StorageError::StorageNotFound(storage_name.to_owned()))?;
    Ok((node, storage))
}

/// The storages the node `node_id` is bound to, by storage name, with the newest state file
/// seen on each (what the isolation check reads).
pub async fn storages_of_node(db: &DatabaseConnection, node_id: i64) -> Result<Vec<NodeStorage>, StorageError> {
    let node = node::Entity::find_by_id(node_id).one(db).await?;
    let Some(node) = node else { return Ok(Vec::new()) };
    let bindings =
        node_storage_binding::Entity::find().filter(node_storage_binding::Column::NodeId.eq(node_id)).all(db).await?;
    let storage_ids: Vec<i64> = bindings.iter().map(|binding| binding.storage_id).collect();
    let storages: std::collections::BTreeMap<i64, Storage> = availability_storage::Entity::find()
        .filter(availability_storage::Column::Id.is_in(storage_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|storage| (storage.id, storage))
        .collect();
    let mut result: Vec<NodeStorage> = bindings
        .into_iter()
        .filter_map(|binding| {
            Some(NodeStorage {
                storage: storages.get(&binding.storage_id)?.clone(),
                node_id,
                node_name: node.name.clone(),
                state_file_at: binding.state_file_at,
            })
        })
        .collect();
    result.sort_by(|a, b| a.storage.name.cmp(&b.storage.name));
    Ok(result)
}

/// Every binding, by storage name then node name.
pub async fn list_bindings(db: &DatabaseConnection) -> Result<Vec<NodeStorage>, StorageError> {
    let storages: std::collections::BTreeMap<i64, Storage> =
        availability_storage::Entity::find().all(db).await?.into_iter().map(|storage| (storage.id, storage)).collect();
    let nodes: std::collections::BTreeMap<i64, String> =
        node::Entity::find().all(db).await?.into_iter().map(|node| (node.id, node.name)).collect();
    let mut result: Vec<NodeStorage> = node_storage_binding::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .filter_map(|binding| {
            Some(NodeStorage {
                storage: storages.get(&binding.storage_id)?.clone(),
                node_id: binding.node_id,
                node_name: nodes.get(&binding.node_id)?.clone(),
                state_file_at: binding.state_file_at,
            })
        })
        .collect();
    result.sort_by(|a, b| (&a.storage.name, &a.node_name).cmp(&(&b.storage.name, &b.node_name)));
    Ok(result)
}
