//! What can go wrong talking to a power device, in the few kinds a caller must tell apart.
//!
//! The HA core decides differently on each: an unreachable BMC may mean the whole rack lost
//! power (or the management network is down), wrong credentials never fix themselves, a
//! rejected command may succeed in another state, a timeout says nothing about the host.
//! Messages name the device (its name and address) and what the device or the tool said;
//! they never hold a password, because passwords never reach the places errors are built
//! (ipmitool gets it through its environment, reqwest through a header we never format).

use std::fmt;
use std::time::Duration;

/// The kind of a [`PowerError`], for matching and for the `power_operations.result` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerErrorKind {
    /// Nothing answered: no route, connection refused, a BMC that never replies.
    Unreachable,
    /// The device answered and refused our credentials.
    AuthFailed,
    /// The device (or driver) cannot do this operation at all.
    Unsupported,
    /// No (complete) answer within the configured time, or the state never came.
    TimedOut,
    /// The device understood and refused (an IPMI completion code, an HTTP 4xx/5xx).
    Rejected,
    /// An answer we cannot make sense of, or a local failure (ipmitool missing, bad options).
    Protocol,
}

impl PowerErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerErrorKind::Unreachable => "unreachable",
            PowerErrorKind::AuthFailed => "auth_failed",
            PowerErrorKind::Unsupported => "unsupported",
            PowerErrorKind::TimedOut => "timed_out",
            PowerErrorKind::Rejected => "rejected",
            PowerErrorKind::Protocol => "protocol",
        }
    }
}

impl fmt::Display for PowerErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A failed call to a power device. `device` is how the operator knows it (`name (driver
/// address:port)`); `detail` is what went wrong, already free of secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    #[error("power device {device} is unreachable: {detail}")]
    Unreachable { device: String, detail: String },
    #[error("power device {device} refused the credentials: {detail}")]
    AuthFailed { device: String, detail: String },
    #[error("power device {device} does not support {operation}: {detail}")]
    Unsupported { device: String, operation: String, detail: String },
    #[error("power device {device} did not finish {operation} within {}s: {detail}", .after.as_secs_f64())]
    TimedOut { device: String, operation: String, after: Duration, detail: String },
    #[error("power device {device} rejected {operation}: {detail}")]
    Rejected { device: String, operation: String, detail: String },
    #[error("power device {device}: {detail}")]
    Protocol { device: String, detail: String },
}

impl PowerError {
    pub fn kind(&self) -> PowerErrorKind {
        match self {
            PowerError::Unreachable { .. } => PowerErrorKind::Unreachable,
            PowerError::AuthFailed { .. } => PowerErrorKind::AuthFailed,
            PowerError::Unsupported { .. } => PowerErrorKind::Unsupported,
            PowerError::TimedOut { .. } => PowerErrorKind::TimedOut,
            PowerError::Rejected { .. } => PowerErrorKind::Rejected,
            PowerError::Protocol { .. } => PowerErrorKind::Protocol,
        }
    }
}

/// Keeps the end of a tool's output for an error message: the last lines say what failed,
/// and a BMC that prints kilobytes must not fill the database's error column.
pub(crate) fn tail_of(text: &str, max_chars: usize) -> String {
    let trimmed = text.trim();
    let count = trimmed.chars().count();
    if count <= max_chars {
        return trimmed.replace('\n', "; ");
    }
    let tail: String = trimmed.chars().skip(count - max_chars).collect();
    format!("...{}", tail.replace('\n', "; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_device_the_operation_and_the_kind() {
        let error = PowerError::TimedOut {
            device: "bmc-1 (ipmi 127.0.0.1:623)".into(),
            operation: "off".into(),
            after: Duration::from_millis(1500),
            detail: "ipmitool killed".into(),
        };
        assert_eq!(error.kind(), PowerErrorKind::TimedOut);
        assert_eq!(
            error.to_string(),
            "power device bmc-1 (ipmi 127.0.0.1:623) did not finish off within 1.5s: ipmitool killed"
        );
    }

    #[test]
    fn tail_of_keeps_the_last_characters_on_one_line() {
        assert_eq!(tail_of("  a\nb  ", 10), "a; b");
        assert_eq!(tail_of("0123456789", 4), "...6789");
    }
}
