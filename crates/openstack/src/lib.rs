//! The OpenStack client of aos-cloud-manager: the only crate that speaks HTTP to Keystone,
//! Nova and Placement (docs/adr/0006-openstack-client.md).
//!
//! [`OpenStackClient::connect`] authenticates with Keystone v3 (password, project scope) and
//! picks Nova's and Placement's endpoints from the catalogue; the client then renews its token
//! before expiry, re-authenticates once on a 401, retries what is safe to retry, and sends
//! every Nova and Placement call with an explicit microversion ([`microversion`]). Results
//! are small typed records ([`ComputeService`], [`Server`], [`Migration`], ...); failures are
//! an [`OpenStackError`] the caller can match on.
//!
//! ```no_run
//! # async fn example(settings: aos_openstack::AuthSettings) -> Result<(), aos_openstack::OpenStackError> {
//! let client = aos_openstack::OpenStackClient::connect(settings).await?;
//! for service in client.compute_services().await? {
//!     println!("{} {:?} {:?}", service.host, service.status, service.state);
//! }
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod compute;
mod error;
mod identity;
mod image;
pub mod microversion;
mod placement;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;
mod time;

pub use aos_config::{EndpointInterface, Secret};
pub use client::OpenStackClient;
pub use compute::{
    Aggregate, ComputeService, Flavor, Hypervisor, Migration, MigrationFilter, MigrationType, NewServer, PowerState,
    Server, ServerFilter, ServerFlavor, ServerGroup, ServiceState, ServiceStatus,
};
pub use error::OpenStackError;
pub use identity::{
    CatalogServiceRecord, EndpointRecord, IdentityClient, IssuedToken, RegisterReport, ServiceRegistration, TokenInfo,
};
pub use placement::{Inventory, ProviderCapacity, ResourceCapacity, ResourceProvider};
pub use settings::{AuthSettings, ClientOptions};
