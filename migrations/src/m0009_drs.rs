//! Migration 9: DRS audits and action plans (issue 7, docs/adr/0015-drs.md).
//!
//! An audit (`drs_audits`) asks one source (our planner, or OpenStack Watcher) for
//! recommendations on one scope (an aggregate, or `""` for every aggregate); it produces at
//! most one action plan (`drs_action_plans`: recommended → applying → succeeded / failed, or
//! superseded by a newer plan of the same scope, or cancelled), whose actions
//! (`drs_actions`, one live migration each) carry their own state. Applying a plan is a task
//! of the jobs layer (`task_id`); the plan's and its actions' states are what the operator
//! reads, the task's steps are the execution record.

use sea_orm_migration::prelude::*;

use crate::support::{create_index, create_table, drop_tables, foreign_key, timestamp, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DrsAudits {
    Table,
    Id,
    Scope,
    Source,
    State,
    Trigger,
    Actor,
    ExternalId,
    Parameters,
    Error,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum DrsActionPlans {
    Table,
    Id,
    AuditId,
    Scope,
    Source,
    State,
    ExternalId,
    TaskId,
    Summary,
    Error,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum DrsActions {
    Table,
    Id,
    PlanId,
    Position,
    Kind,
    ServerId,
    ServerName,
    SourceHost,
    TargetHost,
    RamMb,
    Vcpus,
    ExternalId,
    State,
    Details,
    Error,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        crate::support::USE_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(
            manager,
            Table::create()
                .table(DrsAudits::Table)
                .col(ColumnDef::new(DrsAudits::Id).string_len(36).not_null().primary_key())
                // The aggregate's name; '' for every aggregate (NOT NULL so it compares).
                .col(ColumnDef::new(DrsAudits::Scope).string_len(255).not_null().default(""))
                .col(ColumnDef::new(DrsAudits::Source).string_len(32).not_null())
                .col(ColumnDef::new(DrsAudits::State).string_len(32).not_null())
                .col(ColumnDef::new(DrsAudits::Trigger).string_len(32).not_null())
                .col(ColumnDef::new(DrsAudits::Actor).string_len(255).not_null())
                // Watcher's audit uuid.
                .col(ColumnDef::new(DrsAudits::ExternalId).string_len(64).null())
                .col(ColumnDef::new(DrsAudits::Parameters).json().null())
                .col(ColumnDef::new(DrsAudits::Error).text().null())
                .col(timestamp(manager, DrsAudits::CreatedAt))
                .col(timestamp_null(manager, DrsAudits::FinishedAt))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "drs_audits",
            "ix_drs_audits_created_at",
            Index::create().col(DrsAudits::CreatedAt).take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(DrsActionPlans::Table)
                .col(ColumnDef::new(DrsActionPlans::Id).string_len(36).not_null().primary_key())
                .col(ColumnDef::new(DrsActionPlans::AuditId).string_len(36).not_null())
                .col(ColumnDef::new(DrsActionPlans::Scope).string_len(255).not_null().default(""))
                .col(ColumnDef::new(DrsActionPlans::Source).string_len(32).not_null())
                .col(ColumnDef::new(DrsActionPlans::State).string_len(32).not_null())
                // Watcher's action plan uuid.
                .col(ColumnDef::new(DrsActionPlans::ExternalId).string_len(64).null())
                // The task that applies it (tasks.id), once applying.
                .col(ColumnDef::new(DrsActionPlans::TaskId).string_len(36).null())
                .col(ColumnDef::new(DrsActionPlans::Summary).json().null())
                .col(ColumnDef::new(DrsActionPlans::Error).text().null())
                .col(timestamp(manager, DrsActionPlans::CreatedAt))
                .col(timestamp(manager, DrsActionPlans::UpdatedAt))
                .col(timestamp_null(manager, DrsActionPlans::FinishedAt))
                .foreign_key(&mut foreign_key(
                    "drs_action_plans",
                    DrsActionPlans::AuditId,
                    DrsAudits::Table,
                    DrsAudits::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        // A new plan supersedes the recommended ones of its scope.
        create_index(
            manager,
            "drs_action_plans",
            "ix_drs_action_plans_scope_state",
            Index::create().col(DrsActionPlans::Scope).col(DrsActionPlans::State).take(),
        )
        .await?;
        create_index(
            manager,
            "drs_action_plans",
            "ix_drs_action_plans_audit_id",
            Index::create().col(DrsActionPlans::AuditId).take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(DrsActions::Table)
                .col(ColumnDef::new(DrsActions::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(DrsActions::PlanId).string_len(36).not_null())
                // 1-based order inside the plan.
                .col(ColumnDef::new(DrsActions::Position).integer().not_null())
                .col(ColumnDef::new(DrsActions::Kind).string_len(32).not_null())
                .col(ColumnDef::new(DrsActions::ServerId).string_len(64).not_null())
                .col(ColumnDef::new(DrsActions::ServerName).string_len(255).not_null().default(""))
                .col(ColumnDef::new(DrsActions::SourceHost).string_len(255).null())
                .col(ColumnDef::new(DrsActions::TargetHost).string_len(255).null())
                .col(ColumnDef::new(DrsActions::RamMb).big_integer().not_null().default(0))
                .col(ColumnDef::new(DrsActions::Vcpus).big_integer().not_null().default(0))
                // Watcher's action uuid.
                .col(ColumnDef::new(DrsActions::ExternalId).string_len(64).null())
                .col(ColumnDef::new(DrsActions::State).string_len(32).not_null())
                .col(ColumnDef::new(DrsActions::Details).json().null())
                .col(ColumnDef::new(DrsActions::Error).text().null())
                .col(timestamp(manager, DrsActions::UpdatedAt))
                .foreign_key(&mut foreign_key(
                    "drs_actions",
                    DrsActions::PlanId,
                    DrsActionPlans::Table,
                    DrsActionPlans::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "drs_actions",
            "ux_drs_actions_plan_id_position",
            Index::create().col(DrsActions::PlanId).col(DrsActions::Position).unique().take(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["drs_actions", "drs_action_plans", "drs_audits"]).await
    }
}
