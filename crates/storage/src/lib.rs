//! Availability storages: shared storages (NFS, CephFS, ...) mounted on the compute nodes,
//! where each node keeps a **state file** listing its instances and their states. A fresh
//! state file with its instances running proves a node alive when the control plane cannot
//! see it, so the HA core does not evacuate it (a second copy of a VM on shared storage
//! corrupts its disk) — DESIGN.md §3 rule 3, `[extra_availability_check]`.
//!
//! This crate owns:
//! - the state file format and its reading and writing ([`state_file`]; format 1,
//!   `<storage path>/aos-node-state/<node>.json`, written atomically, read under a timeout;
//!   docs/adr/0009-node-state-file.md) — the HA core's isolation check reads it, the node
//!   agent writes it;
//! - the registered storages and node bindings ([`store`], tables `availability_storages`
//!   and `node_storage_bindings`; part of the data layer, as aos-jobs is for its tables);
//! - storage sync ([`sync`]): every storage's reachability and every bound node's newest
//!   state file, recorded in the database (the beat's `[storage_sync]` job, and
//!   `aos-cloud-manager storage sync`).

pub mod state_file;
pub mod store;
pub mod sync;

pub use state_file::{
    DEFAULT_IO_TIMEOUT, FORMAT, InstanceEntry, InstanceState, STATE_DIRECTORY, StateFile, StateFileError,
    read_state_file, read_state_file_within, running_rate, state_file_path, write_state_file, write_state_file_within,
};
pub use store::{
    NodeStorage, Storage, StorageError, bind_node, create_storage, delete_storage, find_storage, list_bindings,
    list_storages, storages_of_node, unbind_node,
};
pub use sync::{
    NodeStateCheck, StateFileOutcome, StorageCheck, StorageSyncReport, StorageSyncSettings, check_reachable,
    storage_sync,
};
