//! Migration 8: node agent heartbeats (issue 8, docs/adr/0012-agent.md). One row per node
//! agent, overwritten by the active controller agent at every heartbeat it receives.
//! `expires_at` is computed by the controller when it records the heartbeat (its own clock plus
//! `[agent] heartbeat_stale_after`), so the node tracker only compares it with now and never
//! trusts a hypervisor's clock. The row is keyed by the node's name (Nova's hypervisor host
//! name), not by `nodes.id`: an agent may start before node sync has mirrored its host.

use sea_orm_migration::prelude::*;

use crate::support::{create_table, drop_tables, timestamp};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AgentHeartbeats {
    Table,
    Node,
    MessageId,
    Sequence,
    SentAt,
    ReceivedAt,
    ExpiresAt,
    Facts,
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
                .table(AgentHeartbeats::Table)
                .col(ColumnDef::new(AgentHeartbeats::Node).string_len(255).not_null().primary_key())
                .col(ColumnDef::new(AgentHeartbeats::MessageId).string_len(64).not_null())
                // The agent's own counter since its start: a restart shows as a drop.
                .col(ColumnDef::new(AgentHeartbeats::Sequence).big_integer().not_null())
                .col(timestamp(manager, AgentHeartbeats::SentAt))
                .col(timestamp(manager, AgentHeartbeats::ReceivedAt))
                .col(timestamp(manager, AgentHeartbeats::ExpiresAt))
                // The heartbeat's body (processes, instances, storages) as the node reported it.
                .col(ColumnDef::new(AgentHeartbeats::Facts).json().null())
                .take(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["agent_heartbeats"]).await
    }
}
