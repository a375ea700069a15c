//! Migration 1: the hypervisor inventory (`nodes`) and the story of every node
//! (`node_events`, one row per state transition or notable observation).

use sea_orm_migration::prelude::*;

use crate::support::{create_index, create_table, drop_tables, foreign_key, timestamp};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
    /// The Nova hypervisor host name (`hypervisor_hostname` / service `host`).
    Name,
    State,
    StateChangedAt,
    NovaServiceId,
    NovaStatus,
    NovaState,
    NovaForcedDown,
    HypervisorId,
    EvacuationAllowed,
    IsReserve,
    DownObservations,
    UpObservations,
    RemovedFromNova,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum NodeEvents {
    Table,
    Id,
    NodeId,
    OccurredAt,
    Kind,
    FromState,
    ToState,
    Actor,
    Reason,
    TaskId,
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
                .table(Nodes::Table)
                .col(ColumnDef::new(Nodes::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(Nodes::Name).string_len(255).not_null())
                .col(ColumnDef::new(Nodes::State).string_len(32).not_null().default("up"))
                .col(timestamp(manager, Nodes::StateChangedAt))
                .col(ColumnDef::new(Nodes::NovaServiceId).string_len(64).null())
                .col(ColumnDef::new(Nodes::NovaStatus).string_len(16).null())
                .col(ColumnDef::new(Nodes::NovaState).string_len(16).null())
                .col(ColumnDef::new(Nodes::NovaForcedDown).boolean().not_null().default(false))
                .col(ColumnDef::new(Nodes::HypervisorId).string_len(64).null())
                .col(ColumnDef::new(Nodes::EvacuationAllowed).boolean().not_null().default(true))
                .col(ColumnDef::new(Nodes::IsReserve).boolean().not_null().default(false))
                .col(ColumnDef::new(Nodes::DownObservations).integer().not_null().default(0))
                .col(ColumnDef::new(Nodes::UpObservations).integer().not_null().default(0))
                .col(ColumnDef::new(Nodes::RemovedFromNova).boolean().not_null().default(false))
                .col(timestamp(manager, Nodes::CreatedAt))
                .col(timestamp(manager, Nodes::UpdatedAt))
                .take(),
        )
        .await?;
        create_index(manager, "nodes", "ux_nodes_name", Index::create().col(Nodes::Name).unique().take()).await?;

        create_table(
            manager,
            Table::create()
                .table(NodeEvents::Table)
                .col(ColumnDef::new(NodeEvents::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(NodeEvents::NodeId).big_integer().not_null())
                .col(timestamp(manager, NodeEvents::OccurredAt))
                .col(ColumnDef::new(NodeEvents::Kind).string_len(64).not_null())
                .col(ColumnDef::new(NodeEvents::FromState).string_len(32).null())
                .col(ColumnDef::new(NodeEvents::ToState).string_len(32).null())
                .col(ColumnDef::new(NodeEvents::Actor).string_len(255).not_null())
                .col(ColumnDef::new(NodeEvents::Reason).text().not_null())
                .col(ColumnDef::new(NodeEvents::TaskId).string_len(36).null())
                .col(ColumnDef::new(NodeEvents::Details).json().null())
                // An event belongs to its node: deleting a node record deletes its story.
                .foreign_key(&mut foreign_key(
                    "node_events",
                    NodeEvents::NodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        // (node_id, occurred_at) serves both the foreign key and "the story of node N in order".
        create_index(
            manager,
            "node_events",
            "ix_node_events_node_id_occurred_at",
            Index::create().col(NodeEvents::NodeId).col(NodeEvents::OccurredAt).take(),
        )
        .await?;
        create_index(
            manager,
            "node_events",
            "ix_node_events_occurred_at",
            Index::create().col(NodeEvents::OccurredAt).take(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["node_events", "nodes"]).await
    }
}
