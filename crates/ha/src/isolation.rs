//! The isolation check (`[extra_availability_check]`): before a down node is fenced and
//! evacuated, read the state file it writes on each availability storage bound to it. A file
//! written after the node went down that shows enough of its instances running means the node
//! is alive and only cut off from the control plane: evacuating it would start a second copy
//! of servers whose disks it still writes.
//!
//! The file format belongs to aos-storage (docs/adr/0009-node-state-file.md); this module
//! sees the files through [`StateFiles`] so the rule is tested without a file system.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One node state file as read from one storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileReading {
    pub storage: String,
    pub written_at: DateTime<Utc>,
    /// Ids of the instances the file lists as running.
    pub running: BTreeSet<String>,
}

/// Access to a node's state files on its availability storages.
#[async_trait]
pub trait StateFiles: Send + Sync + 'static {
    /// The node's state files, one per storage bound to it that has one. An unreadable
    /// storage is reported in the error list, not as a failure of the whole read.
    async fn read(&self, node_id: i64, node: &str) -> (Vec<StateFileReading>, Vec<String>);
}

/// No storages anywhere: the check never finds a file.
pub struct NoStorages;

#[async_trait]
impl StateFiles for NoStorages {
    async fn read(&self, _node_id: i64, _node: &str) -> (Vec<StateFileReading>, Vec<String>) {
        (Vec::new(), Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationSettings {
    pub delay: Duration,
    pub attempts: u32,
    /// Percentage of the node's instances that must be running in a fresh file.
    pub instance_rate: u32,
}

impl IsolationSettings {
    /// `None` when `[extra_availability_check] enabled = False`.
    pub fn from_config(config: &aos_config::Config) -> Option<Self> {
        let section = &config.extra_availability_check;
        section.enabled.then(|| IsolationSettings {
            delay: section.delay,
            attempts: section.attempts.max(1),
            instance_rate: section.instance_rate,
        })
    }
}

/// What the check concluded, kept in the task step and the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationVerdict {
    /// The node is alive and cut off: do not evacuate.
    pub alive: bool,
    pub reason: String,
    pub attempts: u32,
}

/// The rule on one set of readings. `instances` are the node's servers according to Nova.
pub fn judge(
    readings: &[StateFileReading],
    down_since: DateTime<Utc>,
    instances: &BTreeSet<String>,
    instance_rate: u32,
) -> Option<String> {
    for reading in readings {
        if reading.written_at <= down_since {
            continue;
        }
        let rate = if instances.is_empty() {
            100
        } else {
            let running = instances.iter().filter(|id| reading.running.contains(*id)).count();
            (running * 100 / instances.len()) as u32
        };
        if rate >= instance_rate {
            return Some(format!(
                "state file on storage {} written at {} (after the node went down at {}) shows {rate}% of its {} \
                 instances running (>= [extra_availability_check] instance_rate {instance_rate}%)",
                reading.storage,
                reading.written_at.to_rfc3339(),
                down_since.to_rfc3339(),
                instances.len()
            ));
        }
    }
    None
}

/// Runs the check: up to `attempts` reads, `delay` apart, stopping at the first proof of life.
pub async fn check(
    files: &dyn StateFiles,
    settings: &IsolationSettings,
    node_id: i64,
    node: &str,
    down_since: DateTime<Utc>,
    instances: &BTreeSet<String>,
) -> IsolationVerdict {
    let mut notes = Vec::new();
    for attempt in 1..=settings.attempts {
        if attempt > 1 {
            tokio::time::sleep(settings.delay).await;
        }
        let (readings, errors) = files.read(node_id, node).await;
        notes.extend(errors);
        if let Some(reason) = judge(&readings, down_since, instances, settings.instance_rate) {
            return IsolationVerdict { alive: true, reason, attempts: attempt };
        }
    }
    let mut reason = format!("no fresh state file proves the node alive after {} attempt(s)", settings.attempts);
    if !notes.is_empty() {
        reason.push_str(&format!(" ({})", notes.join("; ")));
    }
    IsolationVerdict { alive: false, reason, attempts: settings.attempts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(minutes_after: i64, running: &[&str], down_since: DateTime<Utc>) -> StateFileReading {
        StateFileReading {
            storage: "nfs1".into(),
            written_at: down_since + chrono::Duration::minutes(minutes_after),
            running: running.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_fresh_file_with_enough_running_instances_proves_the_node_alive() {
        let down = Utc::now();
        let instances: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert!(judge(&[reading(1, &["a", "b"], down)], down, &instances, 100).is_some());
        assert!(judge(&[reading(1, &["a"], down)], down, &instances, 50).is_some());
    }

    #[test]
    fn a_stale_file_or_too_few_running_instances_proves_nothing() {
        let down = Utc::now();
        let instances: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert!(
            judge(&[reading(-1, &["a", "b"], down)], down, &instances, 100).is_none(),
            "written before the failure"
        );
        assert!(judge(&[reading(1, &["a"], down)], down, &instances, 100).is_none(), "50% < 100%");
        assert!(judge(&[], down, &instances, 0).is_none(), "no file at all");
    }
}
