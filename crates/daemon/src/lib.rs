//! What every aos-cloud-manager daemon shares in its life: start-up checks, logging, the
//! shutdown signal, systemd notifications, readiness reporting, the status endpoint and the
//! database lease that makes singleton work safe across controllers.
//!
//! A daemon's library exposes `run(context, shutdown)`; its `main` only parses arguments and
//! calls [`main_entry`], which loads the configuration, starts logging and hands over.

pub mod lease;
pub mod logging;
pub mod metrics;
pub mod readiness;
pub mod registry;
pub mod shutdown;
pub mod startup;
pub mod status;
pub mod systemd;

pub use lease::{LeaseGrant, LeaseKeeper};
pub use readiness::{CheckState, Readiness};
pub use shutdown::{ShutdownToken, shutdown_on_signals};
pub use startup::{CommonArgs, DaemonContext, main_entry};
