//! One module per top-level command.

pub mod agent;
pub mod all_in_one;
pub mod balance;
pub mod config;
pub mod configure;
pub mod db;
pub mod demo;
pub mod drs;
pub mod event;
pub mod keystone;
pub mod node;
pub mod operator;
pub mod power;
pub mod storage;

/// A current-thread runtime for one-shot commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Connects to the configured database for a one-shot command (no retry: the operator is
/// waiting and wants the error now).
pub async fn connect(config: &aos_config::Config) -> anyhow::Result<aos_db::DatabaseConnection> {
    use anyhow::Context as _;
    aos_db::connect(
        &config.database.url.to_sqlx_url(),
        config.database.max_connections,
        config.database.connect_timeout,
    )
    .await
    .with_context(|| format!("[database] url = {}", config.database.url.masked()))
}
