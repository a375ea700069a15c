//! Migration 6: coordination between controllers. `leases` elect the single active beat
//! (and agent) and hand out fencing generations; `service_instances` list every running
//! daemon with its heartbeat, for `/readyz`, the CLI and stale-claim detection.

use sea_orm_migration::prelude::*;

use crate::support::{create_index, create_table, drop_tables, timestamp};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Leases {
    Table,
    Name,
    Holder,
    Generation,
    AcquiredAt,
    RenewedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ServiceInstances {
    Table,
    Id,
    Role,
    Host,
    Pid,
    StartedAt,
    HeartbeatAt,
    State,
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
                .table(Leases::Table)
                .col(ColumnDef::new(Leases::Name).string_len(64).not_null().primary_key())
                .col(ColumnDef::new(Leases::Holder).string_len(255).not_null())
                // Bumped on every change of tenure (even the same holder re-acquiring after
                // expiry): the fencing token writes made under the lease are checked against.
                .col(ColumnDef::new(Leases::Generation).big_integer().not_null().default(0))
                .col(timestamp(manager, Leases::AcquiredAt))
                .col(timestamp(manager, Leases::RenewedAt))
                .col(timestamp(manager, Leases::ExpiresAt))
                .take(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table(ServiceInstances::Table)
                .col(ColumnDef::new(ServiceInstances::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(ServiceInstances::Role).string_len(32).not_null())
                .col(ColumnDef::new(ServiceInstances::Host).string_len(255).not_null())
                .col(ColumnDef::new(ServiceInstances::Pid).big_integer().not_null())
                .col(timestamp(manager, ServiceInstances::StartedAt))
                .col(timestamp(manager, ServiceInstances::HeartbeatAt))
                .col(ColumnDef::new(ServiceInstances::State).string_len(16).not_null())
                .col(ColumnDef::new(ServiceInstances::Details).json().null())
                .take(),
        )
        .await?;
        create_index(
            manager,
            "service_instances",
            "ux_service_instances_role_host_pid",
            Index::create()
                .col(ServiceInstances::Role)
                .col(ServiceInstances::Host)
                .col(ServiceInstances::Pid)
                .unique()
                .take(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, &["service_instances", "leases"]).await
    }
}
