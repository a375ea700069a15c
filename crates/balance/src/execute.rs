//! Executing a plan: the `balance_aggregate` task (aos-jobs), one resumable step per live
//! migration, a bounded number in flight, each tracked through the server's status and its
//! Nova migration record and retried up to `[balancing] migration_retries` times.
//!
//! The plan travels in the task's payload, so what runs is exactly what was previewed and
//! recorded; a task resumed on another worker skips the migrations whose steps succeeded.
//! Each step is idempotent on its own: a server already on its target counts as migrated.
//!
//! Re-planning when the cloud changed under the plan: before each attempt the server's host
//! and the two hosts' Placement figures are read again ([`crate::recheck`]); a server no
//! longer on its source, a target that can no longer take it (capacity, band, gone) or a
//! source no longer loaded makes the migration *skipped* (its step succeeds with
//! `skipped` = the reason, so a resumed task does not try it again). When anything was
//! skipped, the remainder is re-planned once from fresh Nova/Placement data (step `replan`,
//! the servers this task already moved kept where they are) and the new migrations run as
//! steps `live_migrate_replanned`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aos_jobs::{JobRunner, TaskContext, TaskError};
use aos_openstack::{MigrationFilter, MigrationType, OpenStackClient};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gather::CloudSnapshot;
use crate::model::{PlannedMigration, PlannerSettings};
use crate::recheck::{self, Figures};

/// The task kind.
pub const BALANCE_AGGREGATE: &str = "balance_aggregate";

/// The step name of one live migration (its target is the server id).
pub const LIVE_MIGRATE_STEP: &str = "live_migrate";

/// The step that re-plans the remainder once, when migrations were skipped.
pub const REPLAN_STEP: &str = "replan";

/// The step name of one migration of the re-planned remainder.
pub const REPLANNED_STEP: &str = "live_migrate_replanned";

/// The payload of a `balance_aggregate` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceTask {
    pub aggregate: String,
    /// In the planner's order.
    pub migrations: Vec<PlannedMigration>,
    /// Who asked (operator or the beat), for the record.
    pub actor: String,
    /// The planner's settings the plan was made with (checks and the re-plan use them too).
    #[serde(default)]
    pub settings: PlannerSettings,
    /// `[balancing] deny_hosts` when the plan was made.
    #[serde(default)]
    pub deny_hosts: Vec<String>,
}

/// The recorded result of the `replan` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replan {
    /// Why (the skipped migrations' reasons).
    pub reasons: Vec<String>,
    /// The new migrations (none when the aggregate needs none any more).
    pub migrations: Vec<PlannedMigration>,
    /// Hosts the new plan leaves loaded.
    pub still_loaded: Vec<String>,
}

/// How a plan is executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteSettings {
    /// Live migrations in flight at once.
    pub concurrency: usize,
    /// `[balancing] migration_retries`: further attempts after a failed one.
    pub migration_retries: u32,
    /// How long one attempt may take before it counts as failed.
    pub attempt_timeout: Duration,
    /// Between two looks at the server and its migration record.
    pub poll_interval: Duration,
}

impl Default for ExecuteSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            migration_retries: 3,
            attempt_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// What happened to one planned migration (the step's recorded details).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationOutcome {
    pub server_id: String,
    pub source: String,
    pub target: String,
    /// Live-migration requests sent (0 when the server was already on its target).
    pub attempts: u32,
    /// Nova's migration record of the successful attempt, when one was seen.
    pub migration_uuid: Option<String>,
    pub seconds: f64,
    /// Errors of the failed attempts before the one that succeeded.
    pub earlier_errors: Vec<String>,
    /// Set when the migration was not done because the cloud changed since the plan: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Registers the `balance_aggregate` handler on a runner (the worker's, or the CLI's own).
pub fn register_tasks(runner: JobRunner, client: OpenStackClient, settings: ExecuteSettings) -> JobRunner {
    let executor = Arc::new(Executor { client, settings });
    runner.register(BALANCE_AGGREGATE, move |context: TaskContext| {
        let executor = Arc::clone(&executor);
        async move { executor.run(context).await }
    })
}

/// Registers the `balance_aggregate` handler on a daemon's runner whose OpenStack client is
/// connected in the background: until it is, a task is retried later (never failed), so a plan
/// recorded by a CLI that died mid-run is finished by the workers.
pub fn register_tasks_when_connected(
    runner: JobRunner,
    client: Arc<tokio::sync::OnceCell<OpenStackClient>>,
    settings: ExecuteSettings,
) -> JobRunner {
    runner.register(BALANCE_AGGREGATE, move |context: TaskContext| {
        let client = Arc::clone(&client);
        let settings = settings.clone();
        async move {
            let client = client.get().cloned().ok_or_else(|| TaskError::retryable("not connected to OpenStack yet"))?;
            Executor { client, settings }.run(context).await
        }
    })
}

pub(crate) struct Executor {
    pub(crate) client: OpenStackClient,
    pub(crate) settings: ExecuteSettings,
}

impl Executor {
    async fn run(&self, context: TaskContext) -> Result<Value, TaskError> {
        let task: BalanceTask = context.payload_as()?;
        tracing::info!(aggregate = %task.aggregate, migrations = task.migrations.len(), actor = %task.actor, "balancing");
        let mut results = self.run_migrations(&context, &task, &task.migrations, LIVE_MIGRATE_STEP).await;
        let reasons: Vec<String> = results
            .iter()
            .filter_map(|(migration, result)| {
                let reason = result.as_ref().ok()?.skipped.as_ref()?;
                Some(format!("{}: {reason}", migration.server_name))
            })
            .collect();
        let mut replanned = None;
        if !reasons.is_empty() {
            // Servers this task moved stay where they are now (never twice in one plan).
            let moved: BTreeSet<String> = results
                .iter()
                .filter(|(_, result)| result.as_ref().is_ok_and(|outcome| outcome.skipped.is_none()))
                .map(|(migration, _)| migration.server_id.clone())
                .collect();
            let replan = context.step(REPLAN_STEP, "", || self.replan(&task, &moved, reasons)).await?;
            tracing::info!(aggregate = %task.aggregate, migrations = replan.migrations.len(), reasons = ?replan.reasons, "the cloud changed under the plan: re-planned the remainder");
            let more = self.run_migrations(&context, &task, &replan.migrations, REPLANNED_STEP).await;
            results.extend(more);
            replanned = Some(replan);
        }
        let mut failures = Vec::new();
        let mut retryable = false;
        let mut migrated = 0;
        let mut skipped = Vec::new();
        for (migration, result) in &results {
            match result {
                Ok(outcome) => match &outcome.skipped {
                    Some(reason) => {
                        skipped.push(serde_json::json!({ "server_id": migration.server_id, "reason": reason }))
                    }
                    None => migrated += 1,
                },
                Err(error) => {
                    retryable |= matches!(error, TaskError::Retryable(_));
                    failures.push(format!(
                        "{} ({} → {}): {error}",
                        migration.server_name, migration.source, migration.target
                    ));
                }
            }
        }
        if failures.is_empty() {
            return Ok(serde_json::json!({
                "aggregate": task.aggregate,
                "migrated": migrated,
                "skipped": skipped,
                "replanned": replanned,
            }));
        }
        let message =
            format!("{} of {} live migrations failed: {}", failures.len(), results.len(), failures.join("; "));
        // Only a failure of our own bookkeeping is worth running the task again; a migration
        // that failed its retries would just be retried once more per run.
        Err(if retryable { TaskError::Retryable(message) } else { TaskError::Fatal(message) })
    }

    /// Runs `migrations` as steps `step`, at most `concurrency` at once; in completion order.
    async fn run_migrations(
        &self,
        context: &TaskContext,
        task: &BalanceTask,
        migrations: &[PlannedMigration],
        step: &str,
    ) -> Vec<(PlannedMigration, Result<MigrationOutcome, TaskError>)> {
        futures::stream::iter(migrations.to_vec())
            .map(|migration: PlannedMigration| {
                let context = context.clone();
                async move {
                    let result = context.step(step, &migration.server_id, || self.migrate(task, &migration)).await;
                    (migration, result)
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await
    }

    /// The aggregate's hosts as Placement reports them now (`None` without an aggregate: a DRS
    /// plan's checks are the server's place only).
    async fn figures(&self, task: &BalanceTask) -> Result<Option<Result<Figures, String>>, TaskError> {
        if task.aggregate.is_empty() {
            return Ok(None);
        }
        let snapshot = CloudSnapshot::read_hosts(&self.client).await.map_err(TaskError::retryable)?;
        let Ok(aggregates) = snapshot.aggregates_named(Some(&task.aggregate)) else {
            return Ok(Some(Err(format!("aggregate {} no longer exists", task.aggregate))));
        };
        let deny: BTreeSet<String> = task.deny_hosts.iter().cloned().collect();
        let gathered = snapshot.input_for(aggregates[0], &deny);
        Ok(Some(Ok(Figures::new(gathered.input.hosts, &task.settings))))
    }

    /// Plans the aggregate again from fresh data, the servers in `moved` kept where they are.
    async fn replan(
        &self,
        task: &BalanceTask,
        moved: &BTreeSet<String>,
        reasons: Vec<String>,
    ) -> Result<Replan, TaskError> {
        let snapshot = CloudSnapshot::read(&self.client).await.map_err(TaskError::retryable)?;
        let Ok(aggregates) = snapshot.aggregates_named(Some(&task.aggregate)) else {
            return Ok(Replan { reasons, migrations: Vec::new(), still_loaded: Vec::new() });
        };
        let deny: BTreeSet<String> = task.deny_hosts.iter().cloned().collect();
        let mut input = snapshot.input_for(aggregates[0], &deny).input;
        for server in &mut input.servers {
            if moved.contains(&server.id) {
                server.pinned = Some("moved by this plan already".into());
            }
        }
        let plan = crate::plan(&input, &task.settings).map_err(TaskError::fatal)?;
        Ok(Replan {
            reasons,
            still_loaded: plan.still_loaded().map(|host| host.name.clone()).collect(),
            migrations: plan.migrations,
        })
    }

    /// One planned migration, with its retries.
    pub(crate) async fn migrate(
        &self,
        task: &BalanceTask,
        planned: &PlannedMigration,
    ) -> Result<MigrationOutcome, TaskError> {
        let started = Instant::now();
        let mut errors = Vec::new();
        let attempts_allowed = self.settings.migration_retries + 1;
        let mut attempts = 0;
        while attempts < attempts_allowed {
            let server = self.client.server(&planned.server_id).await.map_err(TaskError::retryable)?;
            if server.host.as_deref() == Some(planned.target.as_str()) && server.status == "ACTIVE" {
                return Ok(self.outcome(planned, attempts, None, started, errors));
            }
            if server.host.as_deref() != Some(planned.source.as_str()) {
                let reason = format!(
                    "server is on {}, no longer on {}",
                    server.host.as_deref().unwrap_or("no host"),
                    planned.source
                );
                return Ok(self.skipped(planned, attempts, started, errors, reason));
            }
            if server.status != "ACTIVE" || server.task_state.is_some() {
                // Still settling from an earlier attempt (or someone else's action): wait.
                if started.elapsed() > self.settings.attempt_timeout {
                    errors.push(format!(
                        "still {} (task {:?}) after {:?}",
                        server.status,
                        server.task_state,
                        started.elapsed()
                    ));
                    break;
                }
                tokio::time::sleep(self.settings.poll_interval).await;
                continue;
            }
            match self.figures(task).await? {
                Some(Ok(figures)) => {
                    if let Err(reason) = recheck::check(planned, &figures) {
                        return Ok(self.skipped(planned, attempts, started, errors, reason));
                    }
                }
                Some(Err(reason)) => return Ok(self.skipped(planned, attempts, started, errors, reason)),
                None => {}
            }
            attempts += 1;
            match self.attempt(planned).await {
                Ok(migration_uuid) => return Ok(self.outcome(planned, attempts, migration_uuid, started, errors)),
                Err(error) => {
                    tracing::warn!(server = %planned.server_id, attempt = attempts, %error, "live migration failed");
                    errors.push(error);
                }
            }
        }
        Err(TaskError::fatal(format!(
            "live migration of {} to {} failed after {attempts} attempt(s): {}",
            planned.server_id,
            planned.target,
            errors.join("; ")
        )))
    }

    /// Sends one live-migration request and follows it to its end: `Ok` with the migration
    /// record's uuid when the server is ACTIVE on the target, `Err` with what went wrong.
    async fn attempt(&self, planned: &PlannedMigration) -> Result<Option<String>, String> {
        let filter = MigrationFilter {
            instance_uuid: Some(planned.server_id.clone()),
            migration_type: Some(MigrationType::LiveMigration),
            ..MigrationFilter::default()
        };
        // Records that existed before this attempt are not its own.
        let known_before = self.client.migrations(&filter).await.map_err(|e| e.to_string())?;
        let last_known = known_before.iter().map(|migration| migration.id).max().unwrap_or(0);
        self.client
            .live_migrate(&planned.server_id, Some(&planned.target))
            .await
            .map_err(|error| format!("request refused: {error}"))?;
        let deadline = Instant::now() + self.settings.attempt_timeout;
        let mut record: Option<aos_openstack::Migration> = None;
        loop {
            tokio::time::sleep(self.settings.poll_interval).await;
            if let Ok(migrations) = self.client.migrations(&filter).await {
                record = migrations.into_iter().filter(|migration| migration.id > last_known).max_by_key(|m| m.id);
            }
            let server = self.client.server(&planned.server_id).await.map_err(|e| e.to_string())?;
            let settled = server.task_state.is_none() && server.status != "MIGRATING";
            if server.status == "ERROR" {
                return Err(format!("server went to ERROR (migration {:?})", record.map(|r| r.status)));
            }
            if settled && server.host.as_deref() == Some(planned.target.as_str()) {
                return Ok(record.and_then(|record| record.uuid));
            }
            let record_failed =
                record.as_ref().is_some_and(|r| matches!(r.status.as_str(), "error" | "failed" | "cancelled"));
            if settled && record_failed {
                return Err(format!(
                    "Nova's migration record {} is {}",
                    record.as_ref().and_then(|r| r.uuid.clone()).unwrap_or_default(),
                    record.as_ref().map(|r| r.status.as_str()).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not on {} after {:?} (status {}, task {:?}, migration {:?})",
                    planned.target,
                    self.settings.attempt_timeout,
                    server.status,
                    server.task_state,
                    record.map(|r| r.status)
                ));
            }
        }
    }

    fn outcome(
        &self,
        planned: &PlannedMigration,
        attempts: u32,
        migration_uuid: Option<String>,
        started: Instant,
        earlier_errors: Vec<String>,
    ) -> MigrationOutcome {
        MigrationOutcome {
            server_id: planned.server_id.clone(),
            source: planned.source.clone(),
            target: planned.target.clone(),
            attempts,
            migration_uuid,
            seconds: started.elapsed().as_secs_f64(),
            earlier_errors,
            skipped: None,
        }
    }

    fn skipped(
        &self,
        planned: &PlannedMigration,
        attempts: u32,
        started: Instant,
        earlier_errors: Vec<String>,
        reason: String,
    ) -> MigrationOutcome {
        tracing::info!(server = %planned.server_id, source = %planned.source, target = %planned.target, %reason, "migration skipped: the cloud changed");
        MigrationOutcome { skipped: Some(reason), ..self.outcome(planned, attempts, None, started, earlier_errors) }
    }
}
