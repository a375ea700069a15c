//! Migration 7: the powered-off reserve pool (issue 5, ADR 0010). `nodes.pool_member` marks a
//! host an operator allowed into the pool (`reserve pool add`); `nodes.idle_since` is when the
//! beat first saw it without instances (cleared when it has some); `nodes.boot_mac` is the NIC
//! a reserve host boots from over PXE when it is brought up (`[pxe] conf_dir`).
//!
//! One `ALTER TABLE` per column: SQLite accepts a single change per statement.

use sea_orm_migration::prelude::*;

use crate::support::timestamp_null;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    PoolMember,
    IdleSince,
    BootMac,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        crate::support::USE_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Re-runnable like every `up` (see support.rs): a column already added is skipped.
        if !manager.has_column("nodes", "pool_member").await? {
            let column = ColumnDef::new(Nodes::PoolMember).boolean().not_null().default(false).take();
            manager.alter_table(Table::alter().table(Nodes::Table).add_column(column).take()).await?;
        }
        if !manager.has_column("nodes", "idle_since").await? {
            let column = timestamp_null(manager, Nodes::IdleSince);
            manager.alter_table(Table::alter().table(Nodes::Table).add_column(column).take()).await?;
        }
        if !manager.has_column("nodes", "boot_mac").await? {
            let column = ColumnDef::new(Nodes::BootMac).string_len(17).null().take();
            manager.alter_table(Table::alter().table(Nodes::Table).add_column(column).take()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Nodes::BootMac, Nodes::IdleSince, Nodes::PoolMember] {
            let name = column.to_string();
            if manager.has_column("nodes", &name).await? {
                manager.alter_table(Table::alter().table(Nodes::Table).drop_column(column).take()).await?;
            }
        }
        Ok(())
    }
}
