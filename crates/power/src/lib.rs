//! The power layer of aos-cloud-manager (docs/adr/0008-power-drivers.md).
//!
//! It owns: the driver interface and the IPMI (ipmitool), Redfish (reqwest) and SSH
//! (command template) drivers ([`driver`]); power actions with read-back verification, the
//! same for every driver ([`operation`]); power devices with credentials encrypted at rest
//! and node bindings ([`store`], [`keyring`]); recorded operations on nodes and fencing for
//! the HA core ([`fence_node`], [`run_node_operation`], [`has_power_device`]); PXELINUX
//! files ([`pxe`]) and ISC dhcpd lease files ([`dhcp_leases`]) for booting reserve hosts.
//!
//! For the HA core:
//!
//! ```no_run
//! # async fn example(db: &aos_db::DatabaseConnection, config: &aos_config::Config, node_id: i64)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let keyring = aos_power::Keyring::from_config(&config.power)?;
//! let settings = aos_power::PowerSettings::from(&config.power);
//! if aos_power::has_power_device(db, node_id).await? {
//!     let report = aos_power::fence_node(db, &keyring, node_id, "worker@ctl1", Some("task-uuid"), &settings).await?;
//!     assert_eq!(report.state, aos_power::PowerState::Off);
//! }
//! # Ok(()) }
//! ```
//!
//! Secrets: a device password is a [`aos_config::Secret`] from the moment it is read, sealed
//! before it reaches the database, opened only to build a driver, and handed to ipmitool
//! through its environment and to a BMC in an HTTP header; no error, log line or `Debug`
//! output holds it.

pub mod dhcp_leases;
pub mod driver;
mod error;
pub mod keyring;
mod mac;
mod node_ops;
pub mod operation;
pub mod pxe;
pub mod store;

pub use aos_config::Secret;
pub use driver::{BootDevice, DeviceSpec, DriverKind, PowerDriver, PowerSettings, PowerState, connect_driver};
pub use error::{PowerError, PowerErrorKind};
pub use keyring::{KeyError, Keyring};
pub use mac::MacAddress;
pub use node_ops::{
    FenceError, FenceReport, NodeOperationError, OperationReport, fence_node, recent_operations, run_device_operation,
    run_node_operation,
};
pub use operation::{ActionOutcome, PowerAction, perform};
pub use store::{
    NewPowerDevice, PowerBinding, PowerDeviceInfo, StoreError, create_device, default_binding, delete_device,
    device_bindings, find_device, has_power_device, init_node, init_nodes_from_file, list_devices, node_bindings,
    unbind_node,
};
