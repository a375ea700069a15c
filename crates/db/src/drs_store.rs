//! DRS audits, action plans and actions (`drs_audits`, `drs_action_plans`, `drs_actions`;
//! docs/adr/0015-drs.md). Every state change is a conditional `UPDATE` on the expected current
//! state, so two operators (or an operator and the beat) never both apply or cancel a plan.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{DrsActionState, DrsAuditState, DrsPlanState, drs_action, drs_action_plan, drs_audit};
use crate::{DbError, begin_write, db_time, guard_lease};

/// An audit about to be asked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDrsAudit {
    /// An aggregate's name; `""` for every aggregate.
    pub scope: String,
    pub source: String,
    /// `operator` or `beat`.
    pub trigger: String,
    pub actor: String,
    pub parameters: Option<Value>,
}

/// One recommended action.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDrsAction {
    pub kind: String,
    pub server_id: String,
    pub server_name: String,
    pub source_host: Option<String>,
    pub target_host: Option<String>,
    pub ram_mb: i64,
    pub vcpus: i64,
    pub external_id: Option<String>,
}

/// What an audit recommends.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDrsPlan {
    pub external_id: Option<String>,
    pub summary: Option<Value>,
    pub actions: Vec<NewDrsAction>,
}

/// The outcome of a conditional state change of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanTransition {
    Done,
    NotFound,
    /// The plan is in this state, which does not allow the change.
    WrongState(DrsPlanState),
}

/// Records an audit as `ongoing` (guarded by `lease` when given); returns its id.
pub async fn drs_start_audit(
    db: &DatabaseConnection,
    lease: Option<(&str, i64)>,
    new: &NewDrsAudit,
    now: DateTime<Utc>,
) -> Result<String, DbError> {
    let id = Uuid::new_v4().to_string();
    let transaction = begin_write(db).await?;
    if let Some((name, generation)) = lease {
        guard_lease(&transaction, name, generation).await?;
    }
    drs_audit::Entity::insert(drs_audit::ActiveModel {
        id: Set(id.clone()),
        scope: Set(new.scope.clone()),
        source: Set(new.source.clone()),
        state: Set(DrsAuditState::Ongoing),
        trigger: Set(new.trigger.clone()),
        actor: Set(new.actor.clone()),
        external_id: Set(None),
        parameters: Set(new.parameters.clone()),
        error: Set(None),
        created_at: Set(db_time(now)),
        finished_at: Set(None),
    })
    .exec_without_returning(&transaction)
    .await?;
    transaction.commit().await?;
    Ok(id)
}

/// Finishes an ongoing audit with what its source answered: `Ok(Some(plan))` records the plan
/// (`recommended`) with its actions (`pending`); `Ok(None)` means nothing to do. Either way
/// the older `recommended` plans of the same scope become `superseded` (they describe a cloud
/// that no longer is). `Err(message)` marks the audit failed and leaves the plans alone.
/// Returns the new plan's id.
pub async fn drs_finish_audit(
    db: &DatabaseConnection,
    lease: Option<(&str, i64)>,
    audit_id: &str,
    external_id: Option<&str>,
    outcome: Result<Option<&NewDrsPlan>, &str>,
    now: DateTime<Utc>,
) -> Result<Option<String>, DbError> {
    let now = db_time(now);
    let transaction = begin_write(db).await?;
    if let Some((name, generation)) = lease {
        guard_lease(&transaction, name, generation).await?;
    }
    let audit = drs_audit::Entity::find_by_id(audit_id.to_owned())
        .one(&transaction)
        .await?
        .ok_or_else(|| DbError::Query(sea_orm::DbErr::RecordNotFound(format!("no DRS audit {audit_id}"))))?;
    let (state, error) = match outcome {
        Ok(_) => (DrsAuditState::Succeeded, None),
        Err(message) => (DrsAuditState::Failed, Some(message.to_owned())),
    };
    drs_audit::Entity::update_many()
        .col_expr(drs_audit::Column::State, Expr::value(state))
        .col_expr(drs_audit::Column::Error, Expr::value(error))
        .col_expr(drs_audit::Column::ExternalId, Expr::value(external_id.map(str::to_owned)))
        .col_expr(drs_audit::Column::FinishedAt, Expr::value(Some(now)))
        .filter(drs_audit::Column::Id.eq(audit_id))
        .exec(&transaction)
        .await?;
    let mut plan_id = None;
    if let Ok(plan) = outcome {
        drs_action_plan::Entity::update_many()
            .col_expr(drs_action_plan::Column::State, Expr::value(DrsPlanState::Superseded))
            .col_expr(drs_action_plan::Column::UpdatedAt, Expr::value(now))
            .col_expr(drs_action_plan::Column::FinishedAt, Expr::value(Some(now)))
            .filter(drs_action_plan::Column::Scope.eq(audit.scope.as_str()))
            .filter(drs_action_plan::Column::State.eq(DrsPlanState::Recommended))
            .exec(&transaction)
            .await?;
        if let Some(plan) = plan {
            let id = Uuid::new_v4().to_string();
            drs_action_plan::Entity::insert(drs_action_plan::ActiveModel {
                id: Set(id.clone()),
                audit_id: Set(audit_id.to_owned()),
                scope: Set(audit.scope.clone()),
                source: Set(audit.source.clone()),
                state: Set(DrsPlanState::Recommended),
                external_id: Set(plan.external_id.clone()),
                task_id: Set(None),
                summary: Set(plan.summary.clone()),
                error: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                finished_at: Set(None),
            })
            .exec_without_returning(&transaction)
            .await?;
            for (index, action) in plan.actions.iter().enumerate() {
                drs_action::Entity::insert(drs_action::ActiveModel {
                    id: Default::default(),
                    plan_id: Set(id.clone()),
                    position: Set(i32::try_from(index + 1).unwrap_or(i32::MAX)),
                    kind: Set(action.kind.clone()),
                    server_id: Set(action.server_id.clone()),
                    server_name: Set(action.server_name.clone()),
                    source_host: Set(action.source_host.clone()),
                    target_host: Set(action.target_host.clone()),
                    ram_mb: Set(action.ram_mb),
                    vcpus: Set(action.vcpus),
                    external_id: Set(action.external_id.clone()),
                    state: Set(DrsActionState::Pending),
                    details: Set(None),
                    error: Set(None),
                    updated_at: Set(now),
                })
                .exec_without_returning(&transaction)
                .await?;
            }
            plan_id = Some(id);
        }
    }
    transaction.commit().await?;
    Ok(plan_id)
}

/// The newest audits first, at most `limit`.
pub async fn drs_list_audits<C: ConnectionTrait>(conn: &C, limit: u64) -> Result<Vec<drs_audit::Model>, DbError> {
    Ok(drs_audit::Entity::find()
        .order_by_desc(drs_audit::Column::CreatedAt)
        .order_by_desc(drs_audit::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// An audit and its plans (at most one today).
pub async fn drs_find_audit<C: ConnectionTrait>(
    conn: &C,
    audit_id: &str,
) -> Result<Option<(drs_audit::Model, Vec<drs_action_plan::Model>)>, DbError> {
    let Some(audit) = drs_audit::Entity::find_by_id(audit_id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    let plans = drs_action_plan::Entity::find()
        .filter(drs_action_plan::Column::AuditId.eq(audit_id))
        .order_by_asc(drs_action_plan::Column::CreatedAt)
        .all(conn)
        .await?;
    Ok(Some((audit, plans)))
}

/// A plan and its actions in order.
pub async fn drs_find_plan<C: ConnectionTrait>(
    conn: &C,
    plan_id: &str,
) -> Result<Option<(drs_action_plan::Model, Vec<drs_action::Model>)>, DbError> {
    let Some(plan) = drs_action_plan::Entity::find_by_id(plan_id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    let actions = drs_action::Entity::find()
        .filter(drs_action::Column::PlanId.eq(plan_id))
        .order_by_asc(drs_action::Column::Position)
        .all(conn)
        .await?;
    Ok(Some((plan, actions)))
}

async fn plan_state<C: ConnectionTrait>(conn: &C, plan_id: &str) -> Result<Option<DrsPlanState>, DbError> {
    Ok(drs_action_plan::Entity::find_by_id(plan_id.to_owned()).one(conn).await?.map(|plan| plan.state))
}

/// recommended → applying, recording the applying task. Call inside the transaction that
/// inserts the task, so both or neither happen.
pub async fn drs_mark_applying<C: ConnectionTrait>(
    conn: &C,
    plan_id: &str,
    task_id: &str,
    now: DateTime<Utc>,
) -> Result<PlanTransition, DbError> {
    let changed = drs_action_plan::Entity::update_many()
        .col_expr(drs_action_plan::Column::State, Expr::value(DrsPlanState::Applying))
        .col_expr(drs_action_plan::Column::TaskId, Expr::value(Some(task_id.to_owned())))
        .col_expr(drs_action_plan::Column::UpdatedAt, Expr::value(db_time(now)))
        .filter(drs_action_plan::Column::Id.eq(plan_id))
        .filter(drs_action_plan::Column::State.eq(DrsPlanState::Recommended))
        .exec(conn)
        .await?
        .rows_affected;
    if changed == 1 {
        return Ok(PlanTransition::Done);
    }
    Ok(match plan_state(conn, plan_id).await? {
        Some(state) => PlanTransition::WrongState(state),
        None => PlanTransition::NotFound,
    })
}

/// recommended or applying → cancelled; its pending actions become cancelled too. The caller
/// cancels the applying task (its running migration, if any, finishes in Nova).
pub async fn drs_cancel_plan(
    db: &DatabaseConnection,
    plan_id: &str,
    now: DateTime<Utc>,
) -> Result<PlanTransition, DbError> {
    let now = db_time(now);
    let transaction = begin_write(db).await?;
    let changed = drs_action_plan::Entity::update_many()
        .col_expr(drs_action_plan::Column::State, Expr::value(DrsPlanState::Cancelled))
        .col_expr(drs_action_plan::Column::UpdatedAt, Expr::value(now))
        .col_expr(drs_action_plan::Column::FinishedAt, Expr::value(Some(now)))
        .filter(drs_action_plan::Column::Id.eq(plan_id))
        .filter(drs_action_plan::Column::State.is_in([DrsPlanState::Recommended, DrsPlanState::Applying]))
        .exec(&transaction)
        .await?
        .rows_affected;
    let outcome = if changed == 1 {
        drs_action::Entity::update_many()
            .col_expr(drs_action::Column::State, Expr::value(DrsActionState::Cancelled))
            .col_expr(drs_action::Column::UpdatedAt, Expr::value(now))
            .filter(drs_action::Column::PlanId.eq(plan_id))
            .filter(drs_action::Column::State.eq(DrsActionState::Pending))
            .exec(&transaction)
            .await?;
        PlanTransition::Done
    } else {
        match plan_state(&transaction, plan_id).await? {
            Some(state) => PlanTransition::WrongState(state),
            None => PlanTransition::NotFound,
        }
    };
    transaction.commit().await?;
    Ok(outcome)
}

/// Records an action's state (and its outcome or error) while its plan is applying. Returns
/// false when the plan is no longer applying (cancelled meanwhile): the caller stops.
pub async fn drs_set_action_state(
    db: &DatabaseConnection,
    plan_id: &str,
    position: i32,
    state: DrsActionState,
    details: Option<Value>,
    error: Option<String>,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    if plan_state(db, plan_id).await? != Some(DrsPlanState::Applying) {
        return Ok(false);
    }
    drs_action::Entity::update_many()
        .col_expr(drs_action::Column::State, Expr::value(state))
        .col_expr(drs_action::Column::Details, Expr::value(details))
        .col_expr(drs_action::Column::Error, Expr::value(error))
        .col_expr(drs_action::Column::UpdatedAt, Expr::value(db_time(now)))
        .filter(drs_action::Column::PlanId.eq(plan_id))
        .filter(drs_action::Column::Position.eq(position))
        .exec(db)
        .await?;
    Ok(true)
}

/// applying → `state` (succeeded or failed), with the error when failed.
pub async fn drs_finish_plan(
    db: &DatabaseConnection,
    plan_id: &str,
    state: DrsPlanState,
    error: Option<String>,
    now: DateTime<Utc>,
) -> Result<PlanTransition, DbError> {
    let now = db_time(now);
    let changed = drs_action_plan::Entity::update_many()
        .col_expr(drs_action_plan::Column::State, Expr::value(state))
        .col_expr(drs_action_plan::Column::Error, Expr::value(error))
        .col_expr(drs_action_plan::Column::UpdatedAt, Expr::value(now))
        .col_expr(drs_action_plan::Column::FinishedAt, Expr::value(Some(now)))
        .filter(drs_action_plan::Column::Id.eq(plan_id))
        .filter(drs_action_plan::Column::State.eq(DrsPlanState::Applying))
        .exec(db)
        .await?
        .rows_affected;
    if changed == 1 {
        return Ok(PlanTransition::Done);
    }
    Ok(match plan_state(db, plan_id).await? {
        Some(state) => PlanTransition::WrongState(state),
        None => PlanTransition::NotFound,
    })
}
