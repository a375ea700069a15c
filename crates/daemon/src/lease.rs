//! The lease keeper: a background loop that acquires and renews a named lease row in the
//! database and publishes whether this process may do the lease's singleton work right now.
//!
//! Why a lease and not an advisory lock: `GET_LOCK()` dies with its connection and does not
//! exist on SQLite; a row with holder, expiry and a generation works on both, survives
//! reconnects, and its generation is a fencing token that every guarded write re-checks
//! (`aos_db::guard_lease`), so a holder that was paused past its expiry cannot act on stale
//! belief. See docs/adr/0003-leases.md.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::readiness::{CheckState, Readiness};
use crate::shutdown::ShutdownToken;

/// Permission to do a lease's work, valid until `valid_until` on this process's monotonic
/// clock unless renewed. `generation` must accompany every write made on the lease's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub generation: i64,
    pub valid_until: Instant,
}

impl LeaseGrant {
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// Configuration of one lease loop.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    pub name: String,
    pub holder: String,
    pub ttl: Duration,
    pub renew_interval: Duration,
}

impl LeaseKeeper {
    /// Starts the loop. The receiver holds `Some(grant)` while this process holds the lease.
    /// On shutdown the lease is released, so a standby takes over at once instead of waiting
    /// for the expiry.
    pub fn spawn(
        self,
        db: aos_db::DatabaseConnection,
        readiness: Readiness,
        shutdown: ShutdownToken,
    ) -> (watch::Receiver<Option<LeaseGrant>>, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = watch::channel(None);
        let task = tokio::spawn(async move { self.run(db, readiness, sender, shutdown).await });
        (receiver, task)
    }

    async fn run(
        self,
        db: aos_db::DatabaseConnection,
        readiness: Readiness,
        sender: watch::Sender<Option<LeaseGrant>>,
        shutdown: ShutdownToken,
    ) {
        let check = format!("lease:{}", self.name);
        loop {
            self.step(&db, &readiness, &check, &sender).await;
            // Also wake when the current grant runs out, so consumers never see a stale grant.
            let wake = match *sender.borrow() {
                Some(grant) => grant.valid_until.min(Instant::now() + self.renew_interval),
                None => Instant::now() + self.renew_interval,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        let held = *sender.borrow();
        sender.send_replace(None);
        if let Some(grant) = held {
            match aos_db::lease_release(&db, &self.name, &self.holder, grant.generation).await {
                Ok(true) => tracing::info!(lease = %self.name, generation = grant.generation, "lease released"),
                Ok(false) => {
                    tracing::info!(lease = %self.name, generation = grant.generation, "lease was no longer ours to release")
                }
                Err(error) => tracing::warn!(lease = %self.name, %error, "could not release the lease; it will expire"),
            }
        }
    }

    /// One acquire-or-renew round; public for tests that drive the loop by hand.
    pub async fn step(
        &self,
        db: &aos_db::DatabaseConnection,
        readiness: &Readiness,
        check: &str,
        sender: &watch::Sender<Option<LeaseGrant>>,
    ) {
        // Measured before the call: the database may apply our expiry later than this instant,
        // never earlier, so the local deadline is conservative.
        let asked_at = Instant::now();
        let previous = *sender.borrow();
        match aos_db::lease_acquire_or_renew(db, &self.name, &self.holder, self.ttl, Utc::now()).await {
            Ok(aos_db::LeaseState::Held { generation, .. }) => {
                let grant = LeaseGrant { generation, valid_until: asked_at + self.ttl };
                if previous.map(|p| p.generation) != Some(generation) {
                    tracing::info!(lease = %self.name, holder = %self.holder, generation, "lease acquired: active");
                }
                readiness.set(check, CheckState::Ok);
                sender.send_replace(Some(grant));
            }
            Ok(aos_db::LeaseState::HeldByOther { holder, generation, .. }) => {
                if previous.is_some() {
                    tracing::warn!(lease = %self.name, %holder, generation, "lease lost to another holder: standing by");
                }
                readiness.set(check, CheckState::Standby(format!("held by {holder} (generation {generation})")));
                sender.send_replace(None);
            }
            Err(error) => {
                // Keep acting only while the last grant is still valid on our own clock.
                let still_valid = previous.filter(LeaseGrant::is_valid);
                if previous.is_some() && still_valid.is_none() {
                    tracing::warn!(lease = %self.name, %error, "lease could not be renewed before expiry: standing by");
                }
                readiness.set(check, CheckState::Failing(format!("lease renewal failed: {error}")));
                sender.send_replace(still_valid);
            }
        }
    }
}
