//! Readiness: named dependency checks (database, broker, lease, ...) that a daemon updates as it
//! runs and that `/readyz` reports. A daemon is ready when every check is `Ok` or `Standby`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// State of one dependency as last observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum CheckState {
    /// Not checked yet.
    Pending,
    /// Working.
    Ok,
    /// Healthy but deliberately idle, e.g. a beat that is not the lease holder.
    Standby(String),
    /// Not working; the detail says why (never a secret).
    Failing(String),
}

impl CheckState {
    fn counts_as_ready(&self) -> bool {
        matches!(self, CheckState::Ok | CheckState::Standby(_))
    }
}

/// Shared, cheaply cloned table of checks of one role.
#[derive(Debug, Clone)]
pub struct Readiness {
    role: &'static str,
    checks: Arc<RwLock<BTreeMap<String, CheckState>>>,
}

impl Readiness {
    pub fn new(role: &'static str) -> Self {
        Self { role, checks: Arc::default() }
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Records the state of `check`, logging only when it changes (a failing broker is logged
    /// once, not every retry).
    pub fn set(&self, check: &str, state: CheckState) {
        let mut checks = self.checks.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = checks.insert(check.to_owned(), state.clone());
        if previous.as_ref() != Some(&state) {
            match &state {
                CheckState::Failing(detail) => tracing::warn!(role = self.role, check, detail, "dependency failing"),
                other => tracing::debug!(role = self.role, check, state = ?other, "dependency state"),
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, CheckState> {
        self.checks.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// True when at least one check exists and none is pending or failing.
    pub fn is_ready(&self) -> bool {
        let checks = self.snapshot();
        !checks.is_empty() && checks.values().all(CheckState::counts_as_ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_requires_every_check_ok_or_standby() {
        let readiness = Readiness::new("test");
        assert!(!readiness.is_ready(), "no checks yet means not ready");
        readiness.set("database", CheckState::Ok);
        readiness.set("lease", CheckState::Standby("held by other".into()));
        assert!(readiness.is_ready());
        readiness.set("broker", CheckState::Failing("connection refused".into()));
        assert!(!readiness.is_ready());
        readiness.set("broker", CheckState::Ok);
        assert!(readiness.is_ready());
        readiness.set("queue", CheckState::Pending);
        assert!(!readiness.is_ready());
    }
}
