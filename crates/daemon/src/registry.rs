//! Service registration: each daemon process has a row in `service_instances` with a heartbeat,
//! so an operator (and the beat) can see which daemons run where, and whether they are ready.
//! This is how daemons without an HTTP port report readiness to the rest of the suite.

use std::time::Duration;

use aos_db::entity::service_instance::ServiceInstanceState;

use crate::startup::DaemonContext;

/// How often the row is refreshed. Readers treat a row older than three periods as dead.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(10);

pub struct Heartbeat {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Stops the loop and removes the instance's row (an orderly stop leaves no trace).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub async fn spawn_heartbeat(context: &DaemonContext) -> anyhow::Result<Heartbeat> {
    let db = context.db.clone();
    let role = context.role;
    let host = context.host.clone();
    let readiness = context.readiness.clone();
    let id = register_with_retry(&db, role, &host).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(HEARTBEAT_PERIOD);
        loop {
            tokio::select! {
                _ = stopped.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let state = if readiness.is_ready() { ServiceInstanceState::Ready } else { ServiceInstanceState::Starting };
            match aos_db::heartbeat_service_instance(&db, id, state).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(role, id, "service instance row was purged as stale; it reappears at restart")
                }
                Err(error) => tracing::warn!(%error, role, "service heartbeat failed"),
            }
        }
        if let Err(error) = aos_db::deregister_service_instance(&db, id).await {
            tracing::warn!(%error, role, "could not deregister the service instance; it will be purged as stale");
        }
    });
    Ok(Heartbeat { stop, task })
}

/// Registration races with other daemons starting at the same moment (InnoDB may answer a
/// deadlock for concurrent delete-then-insert); a few retries make start-up robust to that.
async fn register_with_retry(db: &aos_db::DatabaseConnection, role: &str, host: &str) -> anyhow::Result<i64> {
    let mut attempt = 1;
    loop {
        match aos_db::register_service_instance(db, role, host, std::process::id()).await {
            Ok(id) => return Ok(id),
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, attempt, "service registration failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                attempt += 1;
            }
            Err(error) => return Err(anyhow::Error::new(error).context("cannot register the service instance")),
        }
    }
}
