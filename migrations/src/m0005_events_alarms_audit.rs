//! Migration 5: what the suite observed and what it was asked to do. `notifications` records
//! Nova's versioned notifications exactly once (by `message_id`), `alarms` are conditions
//! an operator must see (storm guard tripped, fence failed, ...), and `audit_log` records
//! every API/CLI action with who asked and how it ended.

use sea_orm_migration::prelude::*;

use crate::support::{create_index, create_table, drop_tables, foreign_key, long_text, timestamp, timestamp_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    MessageId,
    EventType,
    PublisherId,
    Priority,
    Host,
    InstanceUuid,
    Payload,
    Status,
    Error,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Alarms {
    Table,
    Id,
    Kind,
    Severity,
    NodeId,
    Message,
    Details,
    RaisedAt,
    ClearedAt,
    ClearedBy,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    OccurredAt,
    RequestId,
    UserId,
    ProjectId,
    Action,
    Target,
    Outcome,
    Details,
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
                .table(Notifications::Table)
                .col(ColumnDef::new(Notifications::Id).big_integer().not_null().auto_increment().primary_key())
                // The oslo.messaging `message_id`; the unique index makes a redelivered
                // message a no-op instead of a second record.
                .col(ColumnDef::new(Notifications::MessageId).string_len(64).not_null())
                .col(ColumnDef::new(Notifications::EventType).string_len(128).not_null())
                .col(ColumnDef::new(Notifications::PublisherId).string_len(255).null())
                .col(ColumnDef::new(Notifications::Priority).string_len(16).null())
                .col(ColumnDef::new(Notifications::Host).string_len(255).null())
                .col(ColumnDef::new(Notifications::InstanceUuid).string_len(36).null())
                // Raw text, not JSON: a malformed message is kept as received.
                .col(long_text(manager, Notifications::Payload))
                .col(ColumnDef::new(Notifications::Status).string_len(16).not_null())
                .col(ColumnDef::new(Notifications::Error).text().null())
                .col(timestamp(manager, Notifications::ReceivedAt))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "notifications",
            "ux_notifications_message_id",
            Index::create().col(Notifications::MessageId).unique().take(),
        )
        .await?;
        create_index(
            manager,
            "notifications",
            "ix_notifications_event_type",
            Index::create().col(Notifications::EventType).take(),
        )
        .await?;
        create_index(
            manager,
            "notifications",
            "ix_notifications_host",
            Index::create().col(Notifications::Host).take(),
        )
        .await?;
        // Listing recent notifications and purging old ones.
        create_index(
            manager,
            "notifications",
            "ix_notifications_received_at",
            Index::create().col(Notifications::ReceivedAt).take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(Alarms::Table)
                .col(ColumnDef::new(Alarms::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(Alarms::Kind).string_len(64).not_null())
                .col(ColumnDef::new(Alarms::Severity).string_len(16).not_null())
                .col(ColumnDef::new(Alarms::NodeId).big_integer().null())
                .col(ColumnDef::new(Alarms::Message).text().not_null())
                .col(ColumnDef::new(Alarms::Details).json().null())
                .col(timestamp(manager, Alarms::RaisedAt))
                // NULL while the alarm is active.
                .col(timestamp_null(manager, Alarms::ClearedAt))
                .col(ColumnDef::new(Alarms::ClearedBy).string_len(255).null())
                .foreign_key(&mut foreign_key(
                    "alarms",
                    Alarms::NodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::SetNull,
                ))
                .take(),
        )
        .await?;
        create_index(manager, "alarms", "ix_alarms_node_id", Index::create().col(Alarms::NodeId).take()).await?;
        create_index(manager, "alarms", "ix_alarms_raised_at", Index::create().col(Alarms::RaisedAt).take()).await?;

        create_table(
            manager,
            Table::create()
                .table(AuditLog::Table)
                .col(ColumnDef::new(AuditLog::Id).big_integer().not_null().auto_increment().primary_key())
                .col(timestamp(manager, AuditLog::OccurredAt))
                .col(ColumnDef::new(AuditLog::RequestId).string_len(64).not_null())
                .col(ColumnDef::new(AuditLog::UserId).string_len(64).not_null())
                .col(ColumnDef::new(AuditLog::ProjectId).string_len(64).not_null())
                .col(ColumnDef::new(AuditLog::Action).string_len(128).not_null())
                .col(ColumnDef::new(AuditLog::Target).string_len(255).null())
                .col(ColumnDef::new(AuditLog::Outcome).string_len(32).not_null())
                .col(ColumnDef::new(AuditLog::Details).json().null())
                .take(),
        )
        .await?;
        create_index(manager, "audit_log", "ix_audit_log_occurred_at", Index::create().col(AuditLog::OccurredAt).take())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["audit_log", "alarms", "notifications"]).await
    }
}
