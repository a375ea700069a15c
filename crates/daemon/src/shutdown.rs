//! The shutdown signal: one cancellation token per process, cancelled by SIGTERM or SIGINT and
//! passed down explicitly (never a global), so tests can run a daemon with their own token.

use tokio_util::sync::CancellationToken;

/// Cancelled when the process should stop; every loop selects on it.
pub type ShutdownToken = CancellationToken;

/// Returns a token cancelled at the first SIGTERM or SIGINT. A second signal is left to the
/// default handler's successor: we log it and keep shutting down within the deadline.
pub fn shutdown_on_signals() -> ShutdownToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let received = wait_for_signal().await;
        tracing::info!(signal = received, "shutdown requested");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot install the SIGTERM handler; only SIGINT will stop the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}
