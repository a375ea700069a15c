//! systemd `Type=notify` support. Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use sd_notify::NotifyState;

/// Tells systemd start-up is complete.
pub fn notify_ready() {
    send(&[NotifyState::Ready], "READY=1");
}

/// Tells systemd the daemon is shutting down (so a stop is not reported as a crash).
pub fn notify_stopping() {
    send(&[NotifyState::Stopping], "STOPPING=1");
}

/// Updates the one-line status `systemctl status` shows.
pub fn notify_status(text: &str) {
    send(&[NotifyState::Status(text)], "STATUS");
}

fn send(states: &[NotifyState<'_>], what: &str) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, notification = what, "systemd notification failed");
    }
}
