//! Every statement the jobs layer runs on `tasks` and `task_steps`. Keeping them in one
//! module keeps the protocol readable in one place:
//!
//! - A task is **claimed** by one conditional `UPDATE` (pending, or running with a stale
//!   heartbeat); `rows_affected` decides, so two workers never both win, on either backend.
//! - A claim is identified by `(claimed_by, attempts)`: `attempts` goes up by one at every
//!   claim, so it is the claim's fencing generation. Every later write on behalf of the
//!   claim (heartbeat, finishing, starting a step) repeats that condition, so a worker that
//!   lost its task to another (its heartbeat went stale and the task was resumed elsewhere)
//!   cannot overwrite what the new owner does.
//! - The one exception is recording that a step **succeeded**: that is a fact about the
//!   world (the server was evacuated), true whoever holds the claim, and recording it keeps
//!   the new owner from doing it again.
//!
//! Timestamps are passed in and stored through [`aos_db::db_time`].

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;

use aos_db::entity::{TaskState, TaskStepState, task, task_step};
use aos_db::{DbError, begin_write, db_time, guard_lease};

use crate::enqueue::NewTask;
use crate::{JobsError, TaskId};

/// The claim a worker holds on a running task (see the module header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub task_id: TaskId,
    pub worker: String,
    /// The task's `attempts` after this claim: the claim's generation.
    pub attempt: i32,
}

/// The outcome of recording a new task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub task_id: TaskId,
    /// False when the idempotency key already named a task (`task_id` is that task's).
    pub created: bool,
}

pub(crate) async fn insert_task<C: ConnectionTrait>(
    conn: &C,
    new: &NewTask,
    now: DateTime<Utc>,
) -> Result<Recorded, JobsError> {
    if let Some(key) = &new.idempotency_key
        && let Some(existing) = find_by_idempotency_key(conn, key).await?
    {
        return Ok(Recorded { task_id: existing, created: false });
    }
    let now = db_time(now);
    let task_id = TaskId::new_random();
    let row = task::ActiveModel {
        id: Set(task_id.to_string()),
        kind: Set(new.kind.clone()),
        node_id: Set(new.node_id),
        state: Set(TaskState::Pending),
        payload: Set(Some(new.payload.clone())),
        result: Set(None),
        error: Set(None),
        attempts: Set(0),
        claimed_by: Set(None),
        claimed_at: Set(None),
        heartbeat_at: Set(None),
        idempotency_key: Set(new.idempotency_key.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    };
    match task::Entity::insert(row).exec_without_returning(conn).await {
        Ok(_) => Ok(Recorded { task_id, created: true }),
        Err(error) => {
            let error = DbError::from(error);
            // Two submissions with one key raced and the other insert won: the key is the
            // answer. (Checked after the failure too, because the first lookup could not see
            // a row that was not committed yet.)
            if error.is_unique_violation()
                && let Some(key) = &new.idempotency_key
                && let Some(existing) = find_by_idempotency_key(conn, key).await?
            {
                return Ok(Recorded { task_id: existing, created: false });
            }
            Err(error.into())
        }
    }
}

async fn find_by_idempotency_key<C: ConnectionTrait>(conn: &C, key: &str) -> Result<Option<TaskId>, JobsError> {
    let id: Option<String> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .filter(task::Column::IdempotencyKey.eq(key))
        .into_tuple()
        .one(conn)
        .await?;
    id.map(|id| parse_task_id(&id)).transpose()
}

pub(crate) async fn find_task(db: &DatabaseConnection, task_id: TaskId) -> Result<Option<task::Model>, JobsError> {
    Ok(task::Entity::find_by_id(task_id.to_string()).one(db).await?)
}

/// Claims the task for `worker` if it is pending, or running with a heartbeat older than
/// `stale_before` (its worker died or hung). Returns the claimed row, or `None` when the
/// task is finished, held by a live worker, or does not exist.
pub(crate) async fn claim(
    db: &DatabaseConnection,
    task_id: TaskId,
    worker: &str,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> Result<Option<(Claim, task::Model)>, JobsError> {
    let now = db_time(now);
    let claimable = Condition::any().add(task::Column::State.eq(TaskState::Pending)).add(
        Condition::all()
            .add(task::Column::State.eq(TaskState::Running))
            .add(task::Column::HeartbeatAt.lt(db_time(stale_before))),
    );
    let claimed = task::Entity::update_many()
        .col_expr(task::Column::State, Expr::value(TaskState::Running))
        .col_expr(task::Column::ClaimedBy, Expr::value(worker))
        .col_expr(task::Column::ClaimedAt, Expr::value(now))
        .col_expr(task::Column::HeartbeatAt, Expr::value(now))
        .col_expr(task::Column::UpdatedAt, Expr::value(now))
        .col_expr(task::Column::Attempts, Expr::col(task::Column::Attempts).add(1))
        .filter(task::Column::Id.eq(task_id.to_string()))
        .filter(claimable)
        .exec(db)
        .await?
        .rows_affected;
    if claimed != 1 {
        return Ok(None);
    }
    // Nobody can take the row over between the update and this read: its heartbeat is
    // `now`, far from stale.
    let Some(row) = find_task(db, task_id).await? else {
        return Ok(None);
    };
    if row.claimed_by.as_deref() != Some(worker) {
        return Ok(None);
    }
    let claim = Claim { task_id, worker: worker.to_owned(), attempt: row.attempts };
    Ok(Some((claim, row)))
}

/// Cancels a task that has not finished; false if it had (or does not exist). A running
/// task's worker notices at its next heartbeat (the claim no longer holds) and drops the
/// handler.
pub(crate) async fn cancel(db: &DatabaseConnection, task_id: TaskId, now: DateTime<Utc>) -> Result<bool, JobsError> {
    let now = db_time(now);
    let cancelled = task::Entity::update_many()
        .col_expr(task::Column::State, Expr::value(TaskState::Cancelled))
        .col_expr(task::Column::FinishedAt, Expr::value(now))
        .col_expr(task::Column::UpdatedAt, Expr::value(now))
        .filter(task::Column::Id.eq(task_id.to_string()))
        .filter(task::Column::State.is_in([TaskState::Pending, TaskState::Running]))
        .exec(db)
        .await?
        .rows_affected;
    Ok(cancelled == 1)
}

/// The condition "this claim still holds the task".
fn held_by(claim: &Claim) -> Condition {
    Condition::all()
        .add(task::Column::Id.eq(claim.task_id.to_string()))
        .add(task::Column::State.eq(TaskState::Running))
        .add(task::Column::ClaimedBy.eq(claim.worker.as_str()))
        .add(task::Column::Attempts.eq(claim.attempt))
}

/// Refreshes the heartbeat; false means the claim is lost.
pub(crate) async fn heartbeat(db: &DatabaseConnection, claim: &Claim, now: DateTime<Utc>) -> Result<bool, JobsError> {
    let updated = task::Entity::update_many()
        .col_expr(task::Column::HeartbeatAt, Expr::value(db_time(now)))
        .filter(held_by(claim))
        .exec(db)
        .await?
        .rows_affected;
    Ok(updated == 1)
}

/// How a claim ends.
pub(crate) enum Finish<'a> {
    Succeeded {
        result: &'a Value,
    },
    Failed {
        error: &'a str,
    },
    /// Back to `pending` for another attempt; `error` is kept so operators can see why.
    Retry {
        error: &'a str,
    },
}

/// Ends the claim; false means it was already lost (nothing written).
pub(crate) async fn finish(
    db: &DatabaseConnection,
    claim: &Claim,
    finish: Finish<'_>,
    now: DateTime<Utc>,
) -> Result<bool, JobsError> {
    let now = db_time(now);
    let update = task::Entity::update_many().col_expr(task::Column::UpdatedAt, Expr::value(now));
    let update = match finish {
        Finish::Succeeded { result } => update
            .col_expr(task::Column::State, Expr::value(TaskState::Succeeded))
            .col_expr(task::Column::Result, Expr::value(result.clone()))
            .col_expr(task::Column::Error, Expr::value(Option::<String>::None))
            .col_expr(task::Column::FinishedAt, Expr::value(now)),
        Finish::Failed { error } => update
            .col_expr(task::Column::State, Expr::value(TaskState::Failed))
            .col_expr(task::Column::Error, Expr::value(error))
            .col_expr(task::Column::FinishedAt, Expr::value(now)),
        Finish::Retry { error } => update
            .col_expr(task::Column::State, Expr::value(TaskState::Pending))
            .col_expr(task::Column::Error, Expr::value(error))
            .col_expr(task::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(task::Column::HeartbeatAt, Expr::value(Option::<DateTime<Utc>>::None)),
    };
    let updated = update.filter(held_by(claim)).exec(db).await?.rows_affected;
    Ok(updated == 1)
}

/// Inside a write transaction: true if the claim still holds the task, and (MySQL) the
/// task row stays locked until the transaction ends, so the claim cannot be lost before
/// the commit. A no-op update rather than a read for that reason (as `aos_db::guard_lease`).
async fn claim_still_held<C: ConnectionTrait>(txn: &C, claim: &Claim) -> Result<bool, JobsError> {
    let matched = task::Entity::update_many()
        .col_expr(task::Column::Attempts, Expr::col(task::Column::Attempts))
        .filter(held_by(claim))
        .exec(txn)
        .await?
        .rows_affected;
    Ok(matched == 1)
}

fn step_filter(task_id: TaskId, name: &str, target: &str) -> Condition {
    Condition::all()
        .add(task_step::Column::TaskId.eq(task_id.to_string()))
        .add(task_step::Column::Name.eq(name))
        .add(task_step::Column::Target.eq(target))
}

pub(crate) async fn find_step(
    db: &DatabaseConnection,
    task_id: TaskId,
    name: &str,
    target: &str,
) -> Result<Option<task_step::Model>, JobsError> {
    Ok(task_step::Entity::find().filter(step_filter(task_id, name, target)).one(db).await?)
}

/// Marks the step running (creating it with the next `seq` if new) under the claim;
/// false means the claim is lost and the step must not start.
pub(crate) async fn start_step(
    db: &DatabaseConnection,
    claim: &Claim,
    name: &str,
    target: &str,
    existing: Option<&task_step::Model>,
    now: DateTime<Utc>,
) -> Result<bool, JobsError> {
    let now = db_time(now);
    let txn = begin_write(db).await?;
    if !claim_still_held(&txn, claim).await? {
        return Ok(false);
    }
    if existing.is_some() {
        task_step::Entity::update_many()
            .col_expr(task_step::Column::State, Expr::value(TaskStepState::Running))
            .col_expr(task_step::Column::Attempts, Expr::col(task_step::Column::Attempts).add(1))
            .col_expr(task_step::Column::StartedAt, Expr::value(now))
            .col_expr(task_step::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(task_step::Column::Error, Expr::value(Option::<String>::None))
            .filter(step_filter(claim.task_id, name, target))
            .exec(&txn)
            .await?;
    } else {
        let last_seq: Option<i32> = task_step::Entity::find()
            .select_only()
            .column_as(task_step::Column::Seq.max(), "last_seq")
            .filter(task_step::Column::TaskId.eq(claim.task_id.to_string()))
            .into_tuple()
            .one(&txn)
            .await?
            .flatten();
        let step = task_step::ActiveModel {
            task_id: Set(claim.task_id.to_string()),
            seq: Set(last_seq.unwrap_or(0) + 1),
            name: Set(name.to_owned()),
            target: Set(target.to_owned()),
            state: Set(TaskStepState::Running),
            attempts: Set(1),
            started_at: Set(Some(now)),
            finished_at: Set(None),
            details: Set(None),
            error: Set(None),
            ..Default::default()
        };
        task_step::Entity::insert(step).exec_without_returning(&txn).await?;
    }
    txn.commit().await.map_err(DbError::from)?;
    Ok(true)
}

/// Records that the step succeeded, whoever holds the claim now (see the module header).
pub(crate) async fn record_step_succeeded(
    db: &DatabaseConnection,
    task_id: TaskId,
    name: &str,
    target: &str,
    details: &Value,
    now: DateTime<Utc>,
) -> Result<(), JobsError> {
    task_step::Entity::update_many()
        .col_expr(task_step::Column::State, Expr::value(TaskStepState::Succeeded))
        .col_expr(task_step::Column::Details, Expr::value(details.clone()))
        .col_expr(task_step::Column::Error, Expr::value(Option::<String>::None))
        .col_expr(task_step::Column::FinishedAt, Expr::value(db_time(now)))
        .filter(step_filter(task_id, name, target))
        .exec(db)
        .await?;
    Ok(())
}

/// Records that the step failed, if the claim still holds the task (a failure seen by a
/// worker that lost the task must not overwrite the new owner's progress).
pub(crate) async fn record_step_failed(
    db: &DatabaseConnection,
    claim: &Claim,
    name: &str,
    target: &str,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), JobsError> {
    let txn = begin_write(db).await?;
    if claim_still_held(&txn, claim).await? {
        task_step::Entity::update_many()
            .col_expr(task_step::Column::State, Expr::value(TaskStepState::Failed))
            .col_expr(task_step::Column::Error, Expr::value(error))
            .col_expr(task_step::Column::FinishedAt, Expr::value(db_time(now)))
            .filter(step_filter(claim.task_id, name, target))
            .exec(&txn)
            .await?;
    }
    txn.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// The sweep's selection, fenced by the lease: tasks pending since before
/// `republish_before`, and running tasks whose heartbeat is older than `stale_before`
/// (also not republished since `republish_before`). Their `updated_at` becomes `now` in
/// the same transaction, so each is republished at most once per interval even while it
/// waits behind a long queue.
pub(crate) async fn select_for_republish(
    db: &DatabaseConnection,
    lease_name: &str,
    lease_generation: i64,
    now: DateTime<Utc>,
    republish_before: DateTime<Utc>,
    stale_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<TaskId>, JobsError> {
    let now = db_time(now);
    let republish_before = db_time(republish_before);
    let txn = begin_write(db).await?;
    guard_lease(&txn, lease_name, lease_generation).await?;
    // A pending task is republished once per `pending_older_than`; a running task whose
    // worker went silent once per `running_stale_after` (both measured from `updated_at`, which
    // a republish sets: no republish storm), so a dead worker's task is taken over after the
    // stale period, not after the (longer) pending period.
    let stale_before = db_time(stale_before);
    let orphaned = Condition::any()
        .add(
            Condition::all()
                .add(task::Column::State.eq(TaskState::Pending))
                .add(task::Column::UpdatedAt.lte(republish_before)),
        )
        .add(
            Condition::all()
                .add(task::Column::State.eq(TaskState::Running))
                .add(task::Column::HeartbeatAt.lt(stale_before))
                .add(task::Column::UpdatedAt.lte(stale_before)),
        );
    let ids: Vec<String> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .filter(orphaned)
        .order_by_asc(task::Column::CreatedAt)
        .limit(limit)
        .into_tuple()
        .all(&txn)
        .await?;
    if !ids.is_empty() {
        task::Entity::update_many()
            .col_expr(task::Column::UpdatedAt, Expr::value(now))
            .filter(task::Column::Id.is_in(ids.iter().map(String::as_str)))
            .exec(&txn)
            .await?;
    }
    txn.commit().await.map_err(DbError::from)?;
    Ok(ids
        .iter()
        .filter_map(|id| match parse_task_id(id) {
            Ok(task_id) => Some(task_id),
            Err(error) => {
                tracing::warn!(task_id = %id, %error, "skipping a task whose id is not a uuid");
                None
            }
        })
        .collect())
}

fn parse_task_id(id: &str) -> Result<TaskId, JobsError> {
    id.parse().map_err(|error| JobsError::Invalid(format!("task id {id:?} in the database is not a uuid: {error}")))
}
