//! Power devices and node bindings in the database (`power_devices`, `node_power_bindings`).
//!
//! The password of a device is sealed by the [`Keyring`] before it reaches a row and opened
//! only to build a driver ([`device_spec`]); everything this module returns for display
//! ([`PowerDeviceInfo`]) says only whether a password is set.
//!
//! `node init` semantics (the reference product's node initialization): binding a node to a
//! device (and outlet) makes that binding the node's default, the one fencing uses; the
//! node's other bindings stay as non-default. Binding twice is a no-op.

use std::path::Path;

use aos_config::Secret;
use aos_db::entity::{node, node_power_binding, power_device};
use aos_db::{DatabaseConnection, db_time};
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use crate::driver::{DeviceSpec, DriverKind, validate_options};
use crate::keyring::{KeyError, Keyring};

/// Failures of the device and binding store, each saying what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("database: {0}")]
    Db(#[from] aos_db::DbError),
    #[error("a power device named {0:?} already exists")]
    DeviceExists(String),
    #[error("no power device named {0:?} (see `aos-cloud-manager power-device list`)")]
    DeviceNotFound(String),
    #[error("no node named {0:?} (see `aos-cloud-manager node list`)")]
    NodeNotFound(String),
    #[error("invalid power device: {0}")]
    InvalidDevice(String),
    #[error("power device {device:?} powers nodes {nodes}: unbind them first, or delete with force")]
    DeviceInUse { device: String, nodes: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{}:{line}: {reason}", path.display())]
    BindingsFile { path: std::path::PathBuf, line: usize, reason: String },
}

/// A device to create. The password is a [`Secret`] from the moment it is read.
#[derive(Debug, Clone)]
pub struct NewPowerDevice {
    pub name: String,
    pub driver: DriverKind,
    pub address: String,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// Driver options (JSON object), validated before storing.
    pub options: serde_json::Value,
}

/// A device as shown to operators and returned by the API: no credential, only whether one
/// is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PowerDeviceInfo {
    pub id: i64,
    pub name: String,
    pub driver: String,
    pub address: String,
    pub port: Option<i32>,
    pub username: Option<String>,
    pub password_set: bool,
    pub options: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<power_device::Model> for PowerDeviceInfo {
    fn from(row: power_device::Model) -> Self {
        PowerDeviceInfo {
            id: row.id,
            name: row.name,
            driver: row.driver,
            address: row.address,
            port: row.port,
            username: row.username,
            password_set: row.secret_ciphertext.is_some(),
            options: row.options.unwrap_or(serde_json::Value::Null),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One node ↔ device (outlet) binding, with both names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PowerBinding {
    pub id: i64,
    pub node_id: i64,
    pub node_name: String,
    pub power_device_id: i64,
    pub device_name: String,
    /// `""` for a device that powers only this node (a BMC).
    pub outlet: String,
    pub is_default: bool,
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    let valid =
        !name.is_empty() && name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidDevice(format!("{what} {name:?}: use letters, digits and - _ . : @ (at most 255)")))
    }
}

/// Creates a device; its options are validated for the driver and its password sealed.
pub async fn create_device(
    db: &DatabaseConnection,
    keyring: &Keyring,
    device: NewPowerDevice,
) -> Result<PowerDeviceInfo, StoreError> {
    check_name("name", &device.name)?;
    if device.address.trim().is_empty() || device.address.chars().any(char::is_whitespace) {
        return Err(StoreError::InvalidDevice(format!("address {:?}: a host name or an IP address", device.address)));
    }
    if device.port == Some(0) {
        return Err(StoreError::InvalidDevice("port 0: give a port 1..65535 or none for the driver's default".into()));
    }
    let options = match device.options {
        serde_json::Value::Null => serde_json::json!({}),
        options => options,
    };
    validate_options(device.driver, &options)
        .map_err(|reason| StoreError::InvalidDevice(format!("{} options: {reason}", device.driver)))?;
    if find_device_row(db, &device.name).await?.is_some() {
        return Err(StoreError::DeviceExists(device.name));
    }
    let ciphertext = match &device.password {
        Some(password) => Some(keyring.seal(&device.name, password)?),
        None => None,
    };
    let now = db_time(Utc::now());
    let row = power_device::ActiveModel {
        name: Set(device.name.clone()),
        driver: Set(device.driver.as_str().to_owned()),
        address: Set(device.address.trim().to_owned()),
        port: Set(device.port.map(i32::from)),
        username: Set(device.username.clone()),
        secret_ciphertext: Set(ciphertext),
        options: Set(Some(options)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    tracing::info!(device = %row.name, driver = %row.driver, address = %row.address, "power device created");
    Ok(row.into())
}

/// Every device, by name.
pub async fn list_devices(db: &DatabaseConnection) -> Result<Vec<PowerDeviceInfo>, StoreError> {
    let rows = power_device::Entity::find().order_by_asc(power_device::Column::Name).all(db).await?;
    Ok(rows.into_iter().map(PowerDeviceInfo::from).collect())
}

/// The device named `name`.
pub async fn find_device(db: &DatabaseConnection, name: &str) -> Result<Option<PowerDeviceInfo>, StoreError> {
    Ok(find_device_row(db, name).await?.map(PowerDeviceInfo::from))
}

async fn find_device_row(db: &impl ConnectionTrait, name: &str) -> Result<Option<power_device::Model>, StoreError> {
    Ok(power_device::Entity::find().filter(power_device::Column::Name.eq(name)).one(db).await?)
}

/// Deletes a device. While nodes are bound to it, only with `force` (which removes the
/// bindings too); its operation history goes with it (foreign key cascade).
pub async fn delete_device(db: &DatabaseConnection, name: &str, force: bool) -> Result<(), StoreError> {
    let transaction = aos_db::begin_write(db).await?;
    let Some(device) = find_device_row(&transaction, name).await? else {
        return Err(StoreError::DeviceNotFound(name.to_owned()));
    };
    let bindings = device_bindings(&transaction, device.id).await?;
    if !bindings.is_empty() && !force {
        let nodes: Vec<String> = bindings.iter().map(|binding| binding.node_name.clone()).collect();
        return Err(StoreError::DeviceInUse { device: name.to_owned(), nodes: nodes.join(", ") });
    }
    node_power_binding::Entity::delete_many()
        .filter(node_power_binding::Column::PowerDeviceId.eq(device.id))
        .exec(&transaction)
        .await?;
    power_device::Entity::delete_by_id(device.id).exec(&transaction).await?;
    transaction.commit().await?;
    tracing::info!(device = %name, bindings_removed = bindings.len(), "power device deleted");
    Ok(())
}

/// The device with its credential opened, for a driver. Only the operation layer calls this.
pub async fn device_spec(
    db: &impl ConnectionTrait,
    keyring: &Keyring,
    device_id: i64,
) -> Result<DeviceSpec, StoreError> {
    let row = power_device::Entity::find_by_id(device_id)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::DeviceNotFound(format!("#{device_id}")))?;
    spec_from_row(keyring, row)
}

pub(crate) fn spec_from_row(keyring: &Keyring, row: power_device::Model) -> Result<DeviceSpec, StoreError> {
    let driver: DriverKind =
        row.driver.parse().map_err(|reason| StoreError::InvalidDevice(format!("device {}: {reason}", row.name)))?;
    let password = match &row.secret_ciphertext {
        Some(sealed) => Some(keyring.open(&row.name, sealed)?),
        None => None,
    };
    Ok(DeviceSpec {
        port: row.port.and_then(|port| u16::try_from(port).ok()),
        name: row.name,
        driver,
        address: row.address,
        username: row.username,
        password,
        options: row.options.unwrap_or(serde_json::Value::Null),
    })
}

/// Binds node `node_name` to `device_name` (outlet `outlet`, `""` for a BMC) and makes it the
/// node's default binding (`node init`). Idempotent.
pub async fn init_node(
    db: &DatabaseConnection,
    node_name: &str,
    device_name: &str,
    outlet: &str,
) -> Result<PowerBinding, StoreError> {
    let transaction = aos_db::begin_write(db).await?;
    let binding = bind_in(&transaction, node_name, device_name, outlet).await?;
    transaction.commit().await?;
    tracing::info!(node = %node_name, device = %device_name, outlet, "node bound to its default power device");
    Ok(binding)
}

/// `node init --from-file`: one binding per line, `NODE DEVICE [OUTLET]`, `#` comments and
/// blank lines ignored. All or nothing: the first bad line (with its number) fails the whole
/// file and nothing is written. Returns the bindings made, in file order.
pub async fn init_nodes_from_file(db: &DatabaseConnection, path: &Path) -> Result<Vec<PowerBinding>, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|error| StoreError::BindingsFile {
        path: path.to_owned(),
        line: 0,
        reason: format!("cannot read: {error}"),
    })?;
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        match fields.as_slice() {
            [node, device] => entries.push((index + 1, *node, *device, "")),
            [node, device, outlet] => entries.push((index + 1, *node, *device, *outlet)),
            _ => {
                return Err(StoreError::BindingsFile {
                    path: path.to_owned(),
                    line: index + 1,
                    reason: format!("expected `NODE DEVICE [OUTLET]`, found {} fields", fields.len()),
                });
            }
        }
    }
    let transaction = aos_db::begin_write(db).await?;
    let mut bindings = Vec::with_capacity(entries.len());
    for (line, node, device, outlet) in entries {
        let binding = bind_in(&transaction, node, device, outlet).await.map_err(|error| match error {
            StoreError::Database(_) | StoreError::Db(_) => error,
            other => StoreError::BindingsFile { path: path.to_owned(), line, reason: other.to_string() },
        })?;
        bindings.push(binding);
    }
    transaction.commit().await?;
    tracing::info!(file = %path.display(), bindings = bindings.len(), "nodes bound to power devices from a file");
    Ok(bindings)
}

async fn bind_in(
    transaction: &aos_db::DatabaseTransaction,
    node_name: &str,
    device_name: &str,
    outlet: &str,
) -> Result<PowerBinding, StoreError> {
    if outlet.len() > 64 || outlet.chars().any(char::is_whitespace) {
        return Err(StoreError::InvalidDevice(format!("outlet {outlet:?}: at most 64 characters, no spaces")));
    }
    let node = node::Entity::find()
        .filter(node::Column::Name.eq(node_name))
        .one(transaction)
        .await?
        .ok_or_else(|| StoreError::NodeNotFound(node_name.to_owned()))?;
    let device = find_device_row(transaction, device_name)
        .await?
        .ok_or_else(|| StoreError::DeviceNotFound(device_name.to_owned()))?;
    // One default per node: clear the others first.
    node_power_binding::Entity::update_many()
        .col_expr(node_power_binding::Column::IsDefault, sea_orm::sea_query::Expr::value(false))
        .filter(node_power_binding::Column::NodeId.eq(node.id))
        .exec(transaction)
        .await?;
    let existing = node_power_binding::Entity::find()
        .filter(node_power_binding::Column::NodeId.eq(node.id))
        .filter(node_power_binding::Column::PowerDeviceId.eq(device.id))
        .filter(node_power_binding::Column::Outlet.eq(outlet))
        .one(transaction)
        .await?;
    let row = match existing {
        Some(row) => {
            let mut update: node_power_binding::ActiveModel = row.into();
            update.is_default = Set(true);
            update.update(transaction).await?
        }
        None => {
            node_power_binding::ActiveModel {
                node_id: Set(node.id),
                power_device_id: Set(device.id),
                outlet: Set(outlet.to_owned()),
                is_default: Set(true),
                ..Default::default()
            }
            .insert(transaction)
            .await?
        }
    };
    Ok(PowerBinding {
        id: row.id,
        node_id: node.id,
        node_name: node.name,
        power_device_id: device.id,
        device_name: device.name,
        outlet: row.outlet,
        is_default: true,
    })
}

/// Removes one binding of a node; if it was the default, the node's oldest remaining binding
/// becomes the default. Returns whether a binding was removed.
pub async fn unbind_node(
    db: &DatabaseConnection,
    node_name: &str,
    device_name: &str,
    outlet: &str,
) -> Result<bool, StoreError> {
    let transaction = aos_db::begin_write(db).await?;
    let bindings = node_bindings_by_name(&transaction, node_name).await?;
    let Some(target) = bindings.iter().find(|b| b.device_name == device_name && b.outlet == outlet) else {
        return Ok(false);
    };
    node_power_binding::Entity::delete_by_id(target.id).exec(&transaction).await?;
    if target.is_default
        && let Some(next) = bindings.iter().find(|binding| binding.id != target.id)
    {
        node_power_binding::Entity::update_many()
            .col_expr(node_power_binding::Column::IsDefault, sea_orm::sea_query::Expr::value(true))
            .filter(node_power_binding::Column::Id.eq(next.id))
            .exec(&transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(true)
}

/// Every binding of a node, default first.
pub async fn node_bindings(db: &impl ConnectionTrait, node_id: i64) -> Result<Vec<PowerBinding>, StoreError> {
    let rows = node_power_binding::Entity::find()
        .filter(node_power_binding::Column::NodeId.eq(node_id))
        .order_by_desc(node_power_binding::Column::IsDefault)
        .order_by_asc(node_power_binding::Column::Id)
        .all(db)
        .await?;
    with_names(db, rows).await
}

async fn node_bindings_by_name(db: &impl ConnectionTrait, node_name: &str) -> Result<Vec<PowerBinding>, StoreError> {
    let node = node::Entity::find()
        .filter(node::Column::Name.eq(node_name))
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NodeNotFound(node_name.to_owned()))?;
    node_bindings(db, node.id).await
}

/// Every binding of a device, by node name.
pub async fn device_bindings(db: &impl ConnectionTrait, device_id: i64) -> Result<Vec<PowerBinding>, StoreError> {
    let rows = node_power_binding::Entity::find()
        .filter(node_power_binding::Column::PowerDeviceId.eq(device_id))
        .order_by_asc(node_power_binding::Column::Id)
        .all(db)
        .await?;
    let mut bindings = with_names(db, rows).await?;
    bindings.sort_by(|a, b| a.node_name.cmp(&b.node_name).then(a.outlet.cmp(&b.outlet)));
    Ok(bindings)
}

/// The binding fencing uses: the node's default one.
pub async fn default_binding(db: &impl ConnectionTrait, node_id: i64) -> Result<Option<PowerBinding>, StoreError> {
    Ok(node_bindings(db, node_id).await?.into_iter().find(|binding| binding.is_default))
}

/// Whether the node has a power device the HA core can fence it with.
pub async fn has_power_device(db: &DatabaseConnection, node_id: i64) -> Result<bool, StoreError> {
    Ok(default_binding(db, node_id).await?.is_some())
}

async fn with_names(
    db: &impl ConnectionTrait,
    rows: Vec<node_power_binding::Model>,
) -> Result<Vec<PowerBinding>, StoreError> {
    let mut bindings = Vec::with_capacity(rows.len());
    for row in rows {
        let node_name = node::Entity::find_by_id(row.node_id).one(db).await?.map(|node| node.name).unwrap_or_default();
        let device_name = power_device::Entity::find_by_id(row.power_device_id)
            .one(db)
            .await?
            .map(|device| device.name)
            .unwrap_or_default();
        bindings.push(PowerBinding {
            id: row.id,
            node_id: row.node_id,
            node_name,
            power_device_id: row.power_device_id,
            device_name,
            outlet: row.outlet,
            is_default: row.is_default,
        });
    }
    Ok(bindings)
}
