//! Periodic balancing (`[balancing] enabled`, `periodic_time`; docs/adr/0014-balancing.md):
//! once per period, while this beat holds its lease, every aggregate with hosts is planned
//! (`aos_balance::plan` on one bulk read of Nova and Placement) and a plan with migrations is
//! recorded as a `balance_aggregate` task for the workers.
//!
//! - **Once per aggregate and period.** The task's idempotency key is
//!   `balance_aggregate:<aggregate>:<period>`, the period being the number of whole
//!   `periodic_time`s since the Unix epoch: two beats (one that lost its lease mid-round) or a
//!   restarted beat record the same aggregate at most once per period.
//! - **Never on top of other work.** No round while a `recover_node` task (HA) is pending or
//!   running (evacuations need the capacity and moving servers then only competes with them),
//!   and no task for an aggregate whose previous `balance_aggregate` task is still pending or
//!   running.
//! - **Fenced.** The task is inserted in a transaction guarded by the beat's lease generation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aos_balance::{BALANCE_AGGREGATE, BalanceTask, CloudSnapshot, PlannerSettings};
use aos_jobs::{NewTask, TaskId};
use aos_openstack::OpenStackClient;
use chrono::{DateTime, Utc};

/// What `[balancing]` says, as the round needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancingSettings {
    pub planner: PlannerSettings,
    pub deny_hosts: Vec<String>,
    pub periodic_time: Duration,
}

impl BalancingSettings {
    pub fn from_config(config: &aos_config::Config) -> Self {
        Self {
            planner: PlannerSettings::from_config(&config.balancing),
            deny_hosts: config.balancing.deny_hosts.clone(),
            periodic_time: config.balancing.periodic_time,
        }
    }
}

/// The period `now` falls in: whole `periodic_time`s since the Unix epoch.
pub fn period_of(now: DateTime<Utc>, periodic_time: Duration) -> i64 {
    let seconds = i64::try_from(periodic_time.as_secs().max(1)).unwrap_or(i64::MAX);
    now.timestamp().div_euclid(seconds)
}

/// The idempotency key of an aggregate's balancing task in a period.
pub fn idempotency_key(aggregate: &str, period: i64) -> String {
    format!("{BALANCE_AGGREGATE}:{aggregate}:{period}")
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BalancingReport {
    pub period: i64,
    /// Aggregate → the task recorded now (to publish).
    pub recorded: BTreeMap<String, TaskId>,
    /// Aggregate → the task recorded earlier in this period (by this beat or another).
    pub already: BTreeMap<String, TaskId>,
    /// Aggregate → why it was not planned now.
    pub held: BTreeMap<String, String>,
    /// Aggregates that need no migration.
    pub balanced: Vec<String>,
    /// Set when the whole round was held (an HA recovery runs).
    pub round_held: Option<String>,
    pub took: Duration,
}

/// Why nothing may start now: an HA recovery in progress, and the aggregates whose balancing
/// task is still pending or running (aggregate → task id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Busy {
    pub recovery: Option<String>,
    pub aggregates: BTreeMap<String, String>,
}

/// Reads [`Busy`] from the tasks table.
pub async fn busy(db: &aos_db::DatabaseConnection) -> anyhow::Result<Busy> {
    let active = aos_db::active_tasks_of_kinds(db, &[aos_ha::RECOVER_NODE, BALANCE_AGGREGATE]).await?;
    let mut busy = Busy::default();
    for task in active {
        if task.kind == aos_ha::RECOVER_NODE {
            busy.recovery.get_or_insert_with(|| format!("HA recovery task {} is {}", task.id, task.state));
            continue;
        }
        let aggregate = task
            .payload
            .as_ref()
            .and_then(|payload| payload.get("aggregate"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        busy.aggregates.entry(aggregate).or_insert(task.id);
    }
    Ok(busy)
}

/// Records `task` under `key` in a transaction guarded by `lease` (`None` for tools and
/// tests). Returns the task id and whether it was created now (false: the key named one).
pub async fn record(
    db: &aos_db::DatabaseConnection,
    lease: Option<(&str, i64)>,
    task: &BalanceTask,
    key: &str,
) -> anyhow::Result<aos_jobs::Recorded> {
    let new = NewTask::new(BALANCE_AGGREGATE, serde_json::to_value(task)?).idempotency_key(key);
    let transaction = aos_db::begin_write(db).await?;
    if let Some((name, generation)) = lease {
        aos_db::guard_lease(&transaction, name, generation).await?;
    }
    let recorded = aos_jobs::insert_task(&transaction, &new).await?;
    transaction.commit().await?;
    Ok(recorded)
}

/// One round at `now` (see the module header). `only` restricts it to one aggregate (tests;
/// an operator uses `balance run`). The caller publishes [`BalancingReport::recorded`].
pub async fn balancing_round(
    db: &aos_db::DatabaseConnection,
    client: &OpenStackClient,
    settings: &BalancingSettings,
    lease: Option<(&str, i64)>,
    actor: &str,
    only: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<BalancingReport> {
    let started = Instant::now();
    let period = period_of(now, settings.periodic_time);
    let mut report = BalancingReport { period, ..BalancingReport::default() };
    let busy = busy(db).await?;
    if let Some(recovery) = busy.recovery {
        report.round_held = Some(recovery);
        report.took = started.elapsed();
        return Ok(report);
    }
    let snapshot = CloudSnapshot::read(client).await?;
    let deny: BTreeSet<String> = settings.deny_hosts.iter().cloned().collect();
    for aggregate in snapshot.aggregates_named(only)? {
        let name = aggregate.name.clone();
        if let Some(task) = busy.aggregates.get(&name) {
            report.held.insert(name, format!("balancing task {task} is still pending or running"));
            continue;
        }
        let gathered = snapshot.input_for(aggregate, &deny);
        let plan = match aos_balance::plan(&gathered.input, &settings.planner) {
            Ok(plan) => plan,
            Err(error) => {
                report.held.insert(name, error.to_string());
                continue;
            }
        };
        if plan.migrations.is_empty() {
            report.balanced.push(name);
            continue;
        }
        let task = BalanceTask {
            aggregate: name.clone(),
            migrations: plan.migrations,
            actor: actor.to_owned(),
            settings: settings.planner,
            deny_hosts: settings.deny_hosts.clone(),
        };
        let recorded = record(db, lease, &task, &idempotency_key(&name, period)).await?;
        if recorded.created {
            report.recorded.insert(name, recorded.task_id);
        } else {
            report.already.insert(name, recorded.task_id);
        }
    }
    report.took = started.elapsed();
    Ok(report)
}

/// Logs a round: recorded tasks and held aggregates at info, the rest at debug.
pub fn log_report(report: &BalancingReport) {
    if let Some(reason) = &report.round_held {
        tracing::info!(period = report.period, %reason, "periodic balancing held");
        return;
    }
    for (aggregate, task_id) in &report.recorded {
        tracing::info!(%aggregate, %task_id, period = report.period, "periodic balancing: task recorded");
    }
    for (aggregate, reason) in &report.held {
        tracing::info!(%aggregate, %reason, "periodic balancing of the aggregate held");
    }
    tracing::debug!(
        period = report.period,
        balanced = ?report.balanced,
        already = ?report.already,
        took_ms = report.took.as_millis() as u64,
        "periodic balancing round"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_whole_periodic_times_since_the_epoch() {
        let day = Duration::from_secs(24 * 3600);
        let midnight = DateTime::parse_from_rfc3339("2026-12-06T00:00:00Z").unwrap().with_timezone(&Utc);
        let period = period_of(midnight, day);
        assert_eq!(period_of(midnight + chrono::TimeDelta::hours(23), day), period);
        assert_eq!(period_of(midnight + chrono::TimeDelta::hours(24), day), period + 1);
        assert_eq!(period_of(midnight - chrono::TimeDelta::seconds(1), day), period - 1);
        assert_eq!(idempotency_key("agg-1", 42), "balance_aggregate:agg-1:42");
    }
}
