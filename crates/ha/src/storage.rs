//! [`StateFiles`] over the availability storages (aos-storage): what the workers use for the
//! isolation check. The file format is documented in docs/adr/0009-node-state-file.md.

use std::path::Path;

use async_trait::async_trait;

use crate::isolation::{StateFileReading, StateFiles};

pub struct StorageStateFiles {
    db: aos_db::DatabaseConnection,
}

impl StorageStateFiles {
    pub fn new(db: aos_db::DatabaseConnection) -> Self {
        StorageStateFiles { db }
    }
}

#[async_trait]
impl StateFiles for StorageStateFiles {
    async fn read(&self, node_id: i64, node: &str) -> (Vec<StateFileReading>, Vec<String>) {
        let bindings = match aos_storage::storages_of_node(&self.db, node_id).await {
            Ok(bindings) => bindings,
            Err(error) => return (Vec::new(), vec![format!("cannot list the storages of {node}: {error}")]),
        };
        let mut readings = Vec::new();
        let mut problems = Vec::new();
        for binding in bindings {
            let storage = &binding.storage;
            match aos_storage::read_state_file(Path::new(&storage.path), node).await {
                Ok(Some(file)) => readings.push(StateFileReading {
                    storage: storage.name.clone(),
                    written_at: file.written_at,
                    running: file
                        .instances
                        .iter()
                        .filter(|instance| instance.state == aos_storage::InstanceState::Running)
                        .map(|instance| instance.id.clone())
                        .collect(),
                }),
                Ok(None) => problems.push(format!("no state file of {node} on storage {}", storage.name)),
                Err(error) => problems.push(format!("storage {}: {error}", storage.name)),
            }
        }
        (readings, problems)
    }
}
