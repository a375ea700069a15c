//! DRS: audits that ask a source for recommendations, action plans an operator previews and
//! applies (or the beat applies, `[drs_trigger] enabled`), each action a live migration with
//! its own state. docs/adr/0015-drs.md.
//!
//! - [`Recommender`] is the one interface of the sources: [`PlannerRecommender`] (our planner,
//!   one action per planned live migration) and [`crate::watcher::WatcherRecommender`]
//!   (OpenStack Watcher's action plans, its live `migrate` actions).
//! - [`run_audit`] records the audit, asks the source, records the plan (`recommended`) and
//!   supersedes the older recommended plans of the same scope.
//! - [`apply_plan`] moves a plan recommended → applying and records the `drs_apply_plan` task
//!   in one transaction; the task ([`register_drs_tasks`]) runs the actions with the
//!   balancing executor (bounded concurrency, Nova's migration records, retries, skipped when
//!   the server is no longer where the plan says) and records each action's state, then the
//!   plan's (succeeded, or failed when an action failed).
//! - [`cancel_plan`] cancels a recommended or applying plan (and its task).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aos_db::entity::{DrsActionState, DrsPlanState};
use aos_db::{DatabaseConnection, NewDrsAction, NewDrsAudit, NewDrsPlan, PlanTransition};
use aos_jobs::{JobRunner, NewTask, TaskContext, TaskError, TaskId};
use aos_openstack::OpenStackClient;
use chrono::Utc;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::execute::{BalanceTask, ExecuteSettings, Executor, MigrationOutcome};
use crate::gather::CloudSnapshot;
use crate::model::{PlannedMigration, PlannerSettings};

/// The task kind that applies an action plan.
pub const DRS_APPLY_PLAN: &str = "drs_apply_plan";

/// The step name of one action (its target is the action's position).
pub const DRS_ACTION_STEP: &str = "drs_action";

/// The kind of every action today.
pub const LIVE_MIGRATE_ACTION: &str = "live_migrate";

/// What a source recommends for one audit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recommendation {
    /// The source's id of the audit (Watcher's audit uuid).
    pub audit_external_id: Option<String>,
    /// `None`: nothing to do.
    pub plan: Option<NewDrsPlan>,
}

/// A boxed future, so that [`Recommender`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of DRS recommendations.
pub trait Recommender: Send + Sync {
    /// `planner` or `watcher` (stored with the audit).
    fn source(&self) -> &'static str;
    /// What was asked, for the record (Watcher's goal and strategy).
    fn parameters(&self) -> Option<Value> {
        None
    }
    /// Recommendations for `scope` (an aggregate's name; `None` for every aggregate).
    fn recommend<'a>(&'a self, scope: Option<&'a str>) -> BoxFuture<'a, Result<Recommendation, String>>;
}

/// Our planner as a DRS source: one action per planned live migration, for every aggregate
/// of the scope.
pub struct PlannerRecommender {
    pub client: OpenStackClient,
    pub settings: PlannerSettings,
    pub deny_hosts: Vec<String>,
}

impl Recommender for PlannerRecommender {
    fn source(&self) -> &'static str {
        "planner"
    }

    fn recommend<'a>(&'a self, scope: Option<&'a str>) -> BoxFuture<'a, Result<Recommendation, String>> {
        Box::pin(async move {
            let snapshot = CloudSnapshot::read(&self.client).await.map_err(|error| error.to_string())?;
            let deny: BTreeSet<String> = self.deny_hosts.iter().cloned().collect();
            let mut actions = Vec::new();
            let mut aggregates = Vec::new();
            for aggregate in snapshot.aggregates_named(scope).map_err(|error| error.to_string())? {
                let gathered = snapshot.input_for(aggregate, &deny);
                let plan = crate::plan(&gathered.input, &self.settings).map_err(|error| error.to_string())?;
                aggregates.push(json!({
                    "aggregate": plan.aggregate,
                    "threshold": plan.threshold,
                    "loaded_before": plan.hosts.iter().filter(|h| h.loaded_before).map(|h| &h.name).collect::<Vec<_>>(),
                    "still_loaded": plan.still_loaded().map(|h| &h.name).collect::<Vec<_>>(),
                    "migrations": plan.migrations.len(),
                    "moved_ram_mb": plan.moved_ram_mb(),
                    "left_out": gathered.left_out,
                }));
                actions.extend(plan.migrations.iter().map(action_of));
            }
            let plan = (!actions.is_empty()).then(|| NewDrsPlan {
                external_id: None,
                summary: Some(json!({ "aggregates": aggregates })),
                actions,
            });
            Ok(Recommendation { audit_external_id: None, plan })
        })
    }
}

fn action_of(migration: &PlannedMigration) -> NewDrsAction {
    NewDrsAction {
        kind: LIVE_MIGRATE_ACTION.into(),
        server_id: migration.server_id.clone(),
        server_name: migration.server_name.clone(),
        source_host: Some(migration.source.clone()),
        target_host: Some(migration.target.clone()),
        ram_mb: i64::try_from(migration.ram_mb).unwrap_or(i64::MAX),
        vcpus: i64::try_from(migration.vcpus).unwrap_or(i64::MAX),
        external_id: None,
    }
}

/// Errors of the DRS operations; messages name the audit or plan and, for a refused change,
/// the state that refuses it.
#[derive(Debug, thiserror::Error)]
pub enum DrsError {
    #[error("no DRS audit {0}")]
    UnknownAudit(String),
    #[error("no DRS action plan {0}")]
    UnknownPlan(String),
    #[error("action plan {plan} is {state}: only a {allowed} plan can be {action}")]
    WrongState { plan: String, state: DrsPlanState, allowed: &'static str, action: &'static str },
    #[error(transparent)]
    Db(#[from] aos_db::DbError),
    #[error(transparent)]
    Jobs(#[from] aos_jobs::JobsError),
}

/// The outcome of [`run_audit`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuditOutcome {
    pub audit_id: String,
    /// The new plan (recommended), if the source recommended anything.
    pub plan_id: Option<String>,
    /// Why the audit failed (the source's error).
    pub error: Option<String>,
}

/// Records an audit, asks `source` and records what it recommends (see the module header).
/// A source that fails makes the audit `failed` with its message (not an `Err`: the audit is
/// recorded); `Err` is for the database.
pub async fn run_audit(
    db: &DatabaseConnection,
    lease: Option<(&str, i64)>,
    source: &dyn Recommender,
    scope: Option<&str>,
    trigger: &str,
    actor: &str,
) -> Result<AuditOutcome, DrsError> {
    let new = NewDrsAudit {
        scope: scope.unwrap_or_default().to_owned(),
        source: source.source().to_owned(),
        trigger: trigger.to_owned(),
        actor: actor.to_owned(),
        parameters: source.parameters(),
    };
    let audit_id = aos_db::drs_start_audit(db, lease, &new, Utc::now()).await?;
    match source.recommend(scope).await {
        Ok(recommendation) => {
            let plan_id = aos_db::drs_finish_audit(
                db,
                lease,
                &audit_id,
                recommendation.audit_external_id.as_deref(),
                Ok(recommendation.plan.as_ref()),
                Utc::now(),
            )
            .await?;
            Ok(AuditOutcome { audit_id, plan_id, error: None })
        }
        Err(message) => {
            aos_db::drs_finish_audit(db, lease, &audit_id, None, Err(&message), Utc::now()).await?;
            Ok(AuditOutcome { audit_id, plan_id: None, error: Some(message) })
        }
    }
}

/// The payload of a `drs_apply_plan` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrsApplyTask {
    pub plan_id: String,
    pub actor: String,
}

/// recommended → applying, and the task that applies it, in one transaction (guarded by
/// `lease` when given). The caller publishes the task (or runs it).
pub async fn apply_plan(
    db: &DatabaseConnection,
    lease: Option<(&str, i64)>,
    plan_id: &str,
    actor: &str,
) -> Result<TaskId, DrsError> {
    let payload = DrsApplyTask { plan_id: plan_id.to_owned(), actor: actor.to_owned() };
    let new = NewTask::new(DRS_APPLY_PLAN, serde_json::to_value(&payload).expect("a payload serializes"))
        .idempotency_key(format!("{DRS_APPLY_PLAN}:{plan_id}"));
    let transaction = aos_db::begin_write(db).await?;
    if let Some((name, generation)) = lease {
        aos_db::guard_lease(&transaction, name, generation).await?;
    }
    let recorded = aos_jobs::insert_task(&transaction, &new).await?;
    match aos_db::drs_mark_applying(&transaction, plan_id, &recorded.task_id.to_string(), Utc::now()).await? {
        PlanTransition::Done => {
            transaction.commit().await.map_err(aos_db::DbError::from)?;
            Ok(recorded.task_id)
        }
        PlanTransition::NotFound => Err(DrsError::UnknownPlan(plan_id.to_owned())),
        PlanTransition::WrongState(state) => {
            Err(DrsError::WrongState { plan: plan_id.to_owned(), state, allowed: "recommended", action: "applied" })
        }
    }
}

/// Cancels a recommended or applying plan; returns the applying task it cancelled, if any.
pub async fn cancel_plan(db: &DatabaseConnection, plan_id: &str) -> Result<Option<TaskId>, DrsError> {
    match aos_db::drs_cancel_plan(db, plan_id, Utc::now()).await? {
        PlanTransition::Done => {}
        PlanTransition::NotFound => return Err(DrsError::UnknownPlan(plan_id.to_owned())),
        PlanTransition::WrongState(state) => {
            return Err(DrsError::WrongState {
                plan: plan_id.to_owned(),
                state,
                allowed: "recommended or applying",
                action: "cancelled",
            });
        }
    }
    let (plan, _) = aos_db::drs_find_plan(db, plan_id).await?.ok_or_else(|| DrsError::UnknownPlan(plan_id.into()))?;
    let Some(task_id) = plan.task_id.as_deref().and_then(|id| id.parse::<TaskId>().ok()) else {
        return Ok(None);
    };
    aos_jobs::cancel_task(db, task_id).await?;
    Ok(Some(task_id))
}

/// Registers the `drs_apply_plan` handler on a runner.
pub fn register_drs_tasks(
    runner: JobRunner,
    db: DatabaseConnection,
    client: OpenStackClient,
    settings: ExecuteSettings,
) -> JobRunner {
    let applier = Arc::new(Applier { db, executor: Executor { client, settings } });
    runner.register(DRS_APPLY_PLAN, move |context: TaskContext| {
        let applier = Arc::clone(&applier);
        async move { applier.run(context).await }
    })
}

/// [`register_drs_tasks`] for a daemon whose OpenStack client connects in the background:
/// until it is connected, the task is retried later.
pub fn register_drs_tasks_when_connected(
    runner: JobRunner,
    db: DatabaseConnection,
    client: Arc<tokio::sync::OnceCell<OpenStackClient>>,
    settings: ExecuteSettings,
) -> JobRunner {
    runner.register(DRS_APPLY_PLAN, move |context: TaskContext| {
        let client = Arc::clone(&client);
        let settings = settings.clone();
        let db = db.clone();
        async move {
            let client = client.get().cloned().ok_or_else(|| TaskError::retryable("not connected to OpenStack yet"))?;
            Applier { db, executor: Executor { client, settings } }.run(context).await
        }
    })
}

struct Applier {
    db: DatabaseConnection,
    executor: Executor,
}

impl Applier {
    async fn run(&self, context: TaskContext) -> Result<Value, TaskError> {
        let payload: DrsApplyTask = context.payload_as()?;
        let plan_id = payload.plan_id.as_str();
        let (plan, actions) = aos_db::drs_find_plan(&self.db, plan_id)
            .await
            .map_err(TaskError::retryable)?
            .ok_or_else(|| TaskError::fatal(format!("no DRS action plan {plan_id}")))?;
        if plan.state != DrsPlanState::Applying {
            return Err(TaskError::fatal(format!("action plan {plan_id} is {}, not applying", plan.state)));
        }
        tracing::info!(plan = plan_id, actions = actions.len(), actor = %payload.actor, "applying a DRS action plan");
        // The checks before each migration: the server must still be on its source (the
        // target's capacity is Nova's scheduler's to check: a DRS plan may span aggregates).
        let checks = BalanceTask {
            aggregate: String::new(),
            migrations: Vec::new(),
            actor: payload.actor.clone(),
            settings: PlannerSettings::default(),
            deny_hosts: Vec::new(),
        };
        let results: Vec<(i32, Result<MigrationOutcome, TaskError>)> = futures::stream::iter(actions)
            .map(|action| {
                let context = context.clone();
                let checks = &checks;
                async move {
                    let position = action.position;
                    let result = context
                        .step(DRS_ACTION_STEP, &position.to_string(), || self.action(plan_id, &action, checks))
                        .await;
                    (position, result)
                }
            })
            .buffer_unordered(self.executor.settings.concurrency.max(1))
            .collect()
            .await;
        let mut failures = Vec::new();
        let (mut migrated, mut skipped) = (0, 0);
        for (position, result) in &results {
            match result {
                Ok(outcome) if outcome.skipped.is_some() => skipped += 1,
                Ok(_) => migrated += 1,
                Err(error) => failures.push(format!("action {position}: {error}")),
            }
        }
        let (state, error) = if failures.is_empty() {
            (DrsPlanState::Succeeded, None)
        } else {
            (DrsPlanState::Failed, Some(failures.join("; ")))
        };
        let finished = aos_db::drs_finish_plan(&self.db, plan_id, state, error.clone(), Utc::now())
            .await
            .map_err(TaskError::retryable)?;
        if let PlanTransition::WrongState(now) = finished {
            return Err(TaskError::fatal(format!("action plan {plan_id} became {now} while it was applied")));
        }
        match error {
            None => Ok(json!({ "plan_id": plan_id, "migrated": migrated, "skipped": skipped })),
            Some(error) => Err(TaskError::fatal(format!("action plan {plan_id} failed: {error}"))),
        }
    }

    /// One action: its state recorded around the migration.
    async fn action(
        &self,
        plan_id: &str,
        action: &aos_db::entity::drs_action::Model,
        checks: &BalanceTask,
    ) -> Result<MigrationOutcome, TaskError> {
        let set = |state: DrsActionState, details: Option<Value>, error: Option<String>| async move {
            aos_db::drs_set_action_state(&self.db, plan_id, action.position, state, details, error, Utc::now())
                .await
                .map_err(TaskError::retryable)
        };
        if matches!(action.state, DrsActionState::Cancelled) {
            return Err(TaskError::fatal("the action was cancelled"));
        }
        if !set(DrsActionState::Running, None, None).await? {
            return Err(TaskError::fatal(format!("action plan {plan_id} is no longer applying (cancelled?)")));
        }
        let (Some(source), Some(target)) = (&action.source_host, &action.target_host) else {
            let reason = "no source or destination host in the recommendation".to_owned();
            set(DrsActionState::Failed, None, Some(reason.clone())).await?;
            return Err(TaskError::fatal(reason));
        };
        let planned = PlannedMigration {
            server_id: action.server_id.clone(),
            server_name: action.server_name.clone(),
            source: source.clone(),
            target: target.clone(),
            ram_mb: u64::try_from(action.ram_mb).unwrap_or(0),
            vcpus: u64::try_from(action.vcpus).unwrap_or(0),
        };
        let result = self.executor.migrate(checks, &planned).await;
        match &result {
            Ok(outcome) => {
                let state = if outcome.skipped.is_some() { DrsActionState::Skipped } else { DrsActionState::Succeeded };
                set(state, serde_json::to_value(outcome).ok(), None).await?;
            }
            Err(error) => {
                set(DrsActionState::Failed, None, Some(error.to_string())).await?;
            }
        }
        result
    }
}
