//! Migration 2: power control. `power_devices` (BMCs and other power endpoints, with
//! credentials stored only as ciphertext), `node_power_bindings` (which device/outlet powers
//! which node) and `power_operations` (every power action we issued, so the node tracker can
//! tell a down transition we caused from a real failure).

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
enum PowerDevices {
    Table,
    Id,
    Name,
    Driver,
    Address,
    Port,
    Username,
    SecretCiphertext,
    Options,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum NodePowerBindings {
    Table,
    Id,
    NodeId,
    PowerDeviceId,
    Outlet,
    IsDefault,
}

#[derive(DeriveIden)]
enum PowerOperations {
    Table,
    Id,
    NodeId,
    PowerDeviceId,
    Operation,
    RequestedAt,
    FinishedAt,
    Result,
    Error,
    Actor,
    TaskId,
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
                .table(PowerDevices::Table)
                .col(ColumnDef::new(PowerDevices::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(PowerDevices::Name).string_len(255).not_null())
                .col(ColumnDef::new(PowerDevices::Driver).string_len(32).not_null())
                .col(ColumnDef::new(PowerDevices::Address).string_len(255).not_null())
                .col(ColumnDef::new(PowerDevices::Port).integer().null())
                .col(ColumnDef::new(PowerDevices::Username).string_len(255).null())
                // Only ciphertext ever reaches this column; the key lives outside the database.
                .col(ColumnDef::new(PowerDevices::SecretCiphertext).blob().null())
                .col(ColumnDef::new(PowerDevices::Options).json().null())
                .col(timestamp(manager, PowerDevices::CreatedAt))
                .col(timestamp(manager, PowerDevices::UpdatedAt))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "power_devices",
            "ux_power_devices_name",
            Index::create().col(PowerDevices::Name).unique().take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(NodePowerBindings::Table)
                .col(ColumnDef::new(NodePowerBindings::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(NodePowerBindings::NodeId).big_integer().not_null())
                .col(ColumnDef::new(NodePowerBindings::PowerDeviceId).big_integer().not_null())
                // '' means "the whole device" (a BMC); NOT NULL because a unique index does not
                // deduplicate NULLs, and two "whole device" bindings must collide.
                .col(ColumnDef::new(NodePowerBindings::Outlet).string_len(64).not_null().default(""))
                .col(ColumnDef::new(NodePowerBindings::IsDefault).boolean().not_null().default(false))
                .foreign_key(&mut foreign_key(
                    "node_power_bindings",
                    NodePowerBindings::NodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut foreign_key(
                    "node_power_bindings",
                    NodePowerBindings::PowerDeviceId,
                    PowerDevices::Table,
                    PowerDevices::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        create_index(
            manager,
            "node_power_bindings",
            "ux_node_power_bindings_node_device_outlet",
            Index::create()
                .col(NodePowerBindings::NodeId)
                .col(NodePowerBindings::PowerDeviceId)
                .col(NodePowerBindings::Outlet)
                .unique()
                .take(),
        )
        .await?;
        create_index(
            manager,
            "node_power_bindings",
            "ix_node_power_bindings_power_device_id",
            Index::create().col(NodePowerBindings::PowerDeviceId).take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(PowerOperations::Table)
                .col(ColumnDef::new(PowerOperations::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(PowerOperations::NodeId).big_integer().null())
                .col(ColumnDef::new(PowerOperations::PowerDeviceId).big_integer().not_null())
                .col(ColumnDef::new(PowerOperations::Operation).string_len(32).not_null())
                .col(timestamp(manager, PowerOperations::RequestedAt))
                .col(timestamp_null(manager, PowerOperations::FinishedAt))
                .col(ColumnDef::new(PowerOperations::Result).string_len(32).null())
                .col(ColumnDef::new(PowerOperations::Error).text().null())
                .col(ColumnDef::new(PowerOperations::Actor).string_len(255).not_null())
                .col(ColumnDef::new(PowerOperations::TaskId).string_len(36).null())
                // The record outlives the node (it is part of an incident's story) ...
                .foreign_key(&mut foreign_key(
                    "power_operations",
                    PowerOperations::NodeId,
                    Nodes::Table,
                    Nodes::Id,
                    ForeignKeyAction::SetNull,
                ))
                // ... but not the device: removing a device removes its operation history.
                .foreign_key(&mut foreign_key(
                    "power_operations",
                    PowerOperations::PowerDeviceId,
                    PowerDevices::Table,
                    PowerDevices::Id,
                    ForeignKeyAction::Cascade,
                ))
                .take(),
        )
        .await?;
        // "Did we power this node off recently?" is the tracker's question.
        create_index(
            manager,
            "power_operations",
            "ix_power_operations_node_id_requested_at",
            Index::create().col(PowerOperations::NodeId).col(PowerOperations::RequestedAt).take(),
        )
        .await?;
        create_index(
            manager,
            "power_operations",
            "ix_power_operations_power_device_id",
            Index::create().col(PowerOperations::PowerDeviceId).take(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["power_operations", "node_power_bindings", "power_devices"]).await
    }
}
