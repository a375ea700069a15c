//! Migration 3: availability storages (shared storages whose per-node state files prove a
//! node is alive when the control plane cannot see it), which nodes write to which storage,
//! and which standby (reserve) nodes back which main nodes.

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
enum AvailabilityStorages {
    Table,
    Id,
    Name,
    Path,
    Reachable,
    LastCheckedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum NodeStorageBindings {
    Table,
    Id,
    NodeId,
    StorageId,
    StateFileAt,
}

#[derive(DeriveIden)]
enum ReserveBindings {
    Table,
    Id,
    ReserveNodeId,
    MainNodeId,
    Priority,
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
                .table(AvailabilityStorages::Table)
                .col(ColumnDef::new(AvailabilityStorages::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(AvailabilityStorages::Name).string_len(255).not_null())
                .col(ColumnDef::new(AvailabilityStorages::Path).string_len(1024).not_null())
                // NULL = never checked yet.
                .col(ColumnDef::new(AvailabilityStorages::Reachable).boolean().null())
                .col(timestamp_null(manager, AvailabilityStorages::LastCheckedAt))
                .col(timestamp(manager, AvailabilityStorages::CreatedAt))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "availability_storages",
            "ux_availability_storages_name",
            Index::create().col(AvailabilityStorages::Name).unique().take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(NodeStorageBindings::Table)
                .col(ColumnDef::new(NodeStorageBindings::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(NodeStorageBindings::NodeId).big_integer().not_null())
                .col(ColumnDef::new(NodeStorageBindings::StorageId).big_integer().not_null())
                // Modification time of the node's state file as last read; NULL = not seen yet.
                .col(timestamp_null(manager, NodeStorageBindings::StateFileAt))
                .foreign_key(&mut foreign_key(
                    "node_storage_bindings",
                    NodeStorageBindings::NodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut foreign_key(
                    "node_storage_bindings",
                    NodeStorageBindings::StorageId,
                    AvailabilityStorages::Table,
                    AvailabilityStorages::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "node_storage_bindings",
            "ux_node_storage_bindings_node_storage",
            Index::create().col(NodeStorageBindings::NodeId).col(NodeStorageBindings::StorageId).unique().take(),
        )
        .await?;
        create_index(
            manager,
            "node_storage_bindings",
            "ix_node_storage_bindings_storage_id",
            Index::create().col(NodeStorageBindings::StorageId).take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(ReserveBindings::Table)
                .col(ColumnDef::new(ReserveBindings::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(ReserveBindings::ReserveNodeId).big_integer().not_null())
                .col(ColumnDef::new(ReserveBindings::MainNodeId).big_integer().not_null())
                // Higher first when several reserves back one main node.
                .col(ColumnDef::new(ReserveBindings::Priority).integer().not_null().default(0))
                .foreign_key(&mut foreign_key(
                    "reserve_bindings",
                    ReserveBindings::ReserveNodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut foreign_key(
                    "reserve_bindings",
                    ReserveBindings::MainNodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "reserve_bindings",
            "ux_reserve_bindings_reserve_main",
            Index::create().col(ReserveBindings::ReserveNodeId).col(ReserveBindings::MainNodeId).unique().take(),
        )
        .await?;
        create_index(
            manager,
            "reserve_bindings",
            "ix_reserve_bindings_main_node_id",
            Index::create().col(ReserveBindings::MainNodeId).take(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["reserve_bindings", "node_storage_bindings", "availability_storages"]).await
    }
}
