//! `storage create|list|delete|bind|unbind|sync`: the availability storages where nodes keep
//! their state files (aos-storage, docs/adr/0009-node-state-file.md), and which node writes
//! to which.

use std::process::ExitCode;

use aos_daemon::CommonArgs;
use aos_storage::{StateFileOutcome, StorageError};

use super::config::print_table;

#[derive(clap::Subcommand)]
pub enum StorageCommand {
    /// Register a storage: NAME, and PATH where it is mounted on the nodes (absolute).
    Create { name: String, path: String },
    /// Every storage: path, reachability as last checked, bound nodes and their state files.
    List,
    /// Forget a storage and its node bindings (the files on it are left alone).
    Delete { name: String },
    /// Bind a node to a storage: the node writes its state file there.
    Bind {
        /// Hypervisor host name, as Nova names it.
        node: String,
        storage: String,
    },
    /// Remove a node's binding to a storage.
    Unbind { node: String, storage: String },
    /// Check every storage and state file now (what the beat does every
    /// `[storage_sync] sync_interval`) and record the results.
    Sync,
}

pub fn run(common: &CommonArgs, command: StorageCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        let outcome = match command {
            StorageCommand::Create { name, path } => create(&db, &name, &path).await,
            StorageCommand::List => list(&db).await,
            StorageCommand::Delete { name } => {
                aos_storage::delete_storage(&db, &name).await.map(|()| out!("storage {name} deleted"))
            }
            StorageCommand::Bind { node, storage } => aos_storage::bind_node(&db, &node, &storage)
                .await
                .map(|_| out!("node {node} bound to storage {storage}")),
            StorageCommand::Unbind { node, storage } => aos_storage::unbind_node(&db, &node, &storage)
                .await
                .map(|()| out!("node {node} unbound from storage {storage}")),
            StorageCommand::Sync => sync(&db).await,
        };
        match outcome {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(StorageError::Db(error)) => Err(error.into()),
            // The operator's input does not fit what exists: exit 2, like `node show` of an
            // unknown node.
            Err(refused) => {
                eprintln!("error: {refused}");
                Ok(ExitCode::from(2))
            }
        }
    })
}

async fn create(db: &aos_db::DatabaseConnection, name: &str, path: &str) -> Result<(), StorageError> {
    let storage = aos_storage::create_storage(db, name, path).await?;
    out!("storage {} created at {} (reachability is checked by storage sync)", storage.name, storage.path);
    Ok(())
}

fn time_or_dash(time: Option<chrono::DateTime<chrono::Utc>>) -> String {
    time.map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "-".to_owned())
}

async fn list(db: &aos_db::DatabaseConnection) -> Result<(), StorageError> {
    let bindings = aos_storage::list_bindings(db).await?;
    let rows: Vec<[String; 5]> = aos_storage::list_storages(db)
        .await?
        .into_iter()
        .map(|storage| {
            let nodes: Vec<&str> = bindings
                .iter()
                .filter(|binding| binding.storage.id == storage.id)
                .map(|binding| binding.node_name.as_str())
                .collect();
            [
                storage.name,
                storage.path,
                match storage.reachable {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "not checked",
                }
                .to_owned(),
                time_or_dash(storage.last_checked_at),
                if nodes.is_empty() { "-".to_owned() } else { nodes.join(", ") },
            ]
        })
        .collect();
    print_table(&["Name", "Path", "Reachable", "Checked (UTC)", "Nodes"], &rows);
    if !bindings.is_empty() {
        out!("");
        let rows: Vec<[String; 3]> = bindings
            .into_iter()
            .map(|binding| [binding.storage.name, binding.node_name, time_or_dash(binding.state_file_at)])
            .collect();
        print_table(&["Storage", "Node", "State file written (UTC)"], &rows);
    }
    Ok(())
}

async fn sync(db: &aos_db::DatabaseConnection) -> Result<(), StorageError> {
    let report = aos_storage::storage_sync(db, &aos_storage::StorageSyncSettings::default()).await?;
    let mut rows: Vec<[String; 4]> = Vec::new();
    for storage in &report.storages {
        if !storage.reachable {
            rows.push([
                storage.name.clone(),
                "-".into(),
                "unreachable".into(),
                storage.error.clone().unwrap_or_default(),
            ]);
        }
        for node in &storage.nodes {
            let (outcome, detail) = match &node.outcome {
                StateFileOutcome::Found { written_at, instances } => {
                    ("found".to_owned(), format!("written {}, {instances} instances", written_at.to_rfc3339()))
                }
                StateFileOutcome::Missing => ("missing".to_owned(), String::new()),
                StateFileOutcome::Unreadable(reason) => ("unusable".to_owned(), reason.clone()),
            };
            rows.push([storage.name.clone(), node.node.clone(), outcome, detail]);
        }
    }
    out!("storage sync: {} reachable, {} unreachable", report.reachable().len(), report.unreachable().len());
    print_table(&["Storage", "Node", "State file", "Detail"], &rows);
    Ok(())
}
