//! Migration 4: long operations as resumable tasks. A `tasks` row is one job (fence,
//! evacuate, migrate, ...); its `task_steps` are the unit of idempotence: a worker resuming
//! a task skips every step already `succeeded`, so nothing is done twice.

use sea_orm_migration::prelude::*;

use crate::support::{create_index, create_table, drop_tables, foreign_key, timestamp, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    Kind,
    NodeId,
    State,
    Payload,
    Result,
    Error,
    Attempts,
    ClaimedBy,
    ClaimedAt,
    HeartbeatAt,
    IdempotencyKey,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum TaskSteps {
    Table,
    Id,
    TaskId,
    Seq,
    Name,
    Target,
    State,
    Attempts,
    StartedAt,
    FinishedAt,
    Details,
    Error,
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
                .table(Tasks::Table)
                // A UUID in its text form: readable in logs, the CLI and the API alike.
                .col(ColumnDef::new(Tasks::Id).string_len(36).not_null().primary_key())
                .col(ColumnDef::new(Tasks::Kind).string_len(64).not_null())
                .col(ColumnDef::new(Tasks::NodeId).big_integer().null())
                .col(ColumnDef::new(Tasks::State).string_len(32).not_null().default("pending"))
                .col(ColumnDef::new(Tasks::Payload).json().null())
                .col(ColumnDef::new(Tasks::Result).json().null())
                .col(ColumnDef::new(Tasks::Error).text().null())
                .col(ColumnDef::new(Tasks::Attempts).integer().not_null().default(0))
                .col(ColumnDef::new(Tasks::ClaimedBy).string_len(255).null())
                .col(timestamp_null(manager, Tasks::ClaimedAt))
                .col(timestamp_null(manager, Tasks::HeartbeatAt))
                // NULL = no deduplication wanted; NULLs never collide in a unique index.
                .col(ColumnDef::new(Tasks::IdempotencyKey).string_len(255).null())
                .col(timestamp(manager, Tasks::CreatedAt))
                .col(timestamp(manager, Tasks::UpdatedAt))
                .col(timestamp_null(manager, Tasks::FinishedAt))
                // Task history outlives the node it was about.
                .foreign_key(&mut foreign_key(
                    "tasks",
                    Tasks::NodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::SetNull,
                ))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "tasks",
            "ux_tasks_idempotency_key",
            Index::create().col(Tasks::IdempotencyKey).unique().take(),
        )
        .await?;
        // Workers look for the oldest pending/stale-running tasks.
        create_index(
            manager,
            "tasks",
            "ix_tasks_state_created_at",
            Index::create().col(Tasks::State).col(Tasks::CreatedAt).take(),
        )
        .await?;
        create_index(manager, "tasks", "ix_tasks_created_at", Index::create().col(Tasks::CreatedAt).take()).await?;
        create_index(manager, "tasks", "ix_tasks_node_id", Index::create().col(Tasks::NodeId).take()).await?;

        create_table(
            manager,
            Table::create()
                .table(TaskSteps::Table)
                .col(ColumnDef::new(TaskSteps::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(TaskSteps::TaskId).string_len(36).not_null())
                .col(ColumnDef::new(TaskSteps::Seq).integer().not_null())
                .col(ColumnDef::new(TaskSteps::Name).string_len(64).not_null())
                // What the step acts on (an instance UUID, a host); '' when the step has no
                // target. NOT NULL because a unique index does not deduplicate NULLs.
                .col(ColumnDef::new(TaskSteps::Target).string_len(255).not_null().default(""))
                .col(ColumnDef::new(TaskSteps::State).string_len(32).not_null().default("pending"))
                .col(ColumnDef::new(TaskSteps::Attempts).integer().not_null().default(0))
                .col(timestamp_null(manager, TaskSteps::StartedAt))
                .col(timestamp_null(manager, TaskSteps::FinishedAt))
                .col(ColumnDef::new(TaskSteps::Details).json().null())
                .col(ColumnDef::new(TaskSteps::Error).text().null())
                .foreign_key(&mut foreign_key(
                    "task_steps",
                    TaskSteps::TaskId,
                    Tasks::Table,
                    Tasks::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "task_steps",
            "ux_task_steps_task_name_target",
            Index::create().col(TaskSteps::TaskId).col(TaskSteps::Name).col(TaskSteps::Target).unique().take(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["task_steps", "tasks"]).await
    }
}
