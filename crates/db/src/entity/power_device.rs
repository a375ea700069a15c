//! `power_devices`: BMCs and other power endpoints (IPMI, Redfish, SSH for labs). The
//! credential is stored only as ciphertext; encryption and decryption happen outside this
//! crate, which never sees a plaintext secret.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "power_devices")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    /// `ipmi`, `redfish`, `ssh`, ...
    pub driver: String,
    pub address: String,
    pub port: Option<i32>,
    pub username: Option<String>,
    /// Encrypted credential; never log or return it (the API shows only whether it is set).
    #[serde(skip_serializing)]
    pub secret_ciphertext: Option<Vec<u8>>,
    /// Driver-specific settings (Redfish system path, IPMI interface, ...).
    pub options: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
