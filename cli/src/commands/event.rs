//! `event list`: the notifications received from Nova, newest first.

use std::process::ExitCode;

use aos_daemon::CommonArgs;

use super::config::print_table;

#[derive(clap::Subcommand)]
pub enum EventCommand {
    /// Received Nova notifications, newest first.
    List {
        /// Only events of this host.
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

pub fn run(common: &CommonArgs, command: EventCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    let EventCommand::List { node, limit } = command;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        let rows: Vec<[String; 6]> = aos_db::list_notifications(&db, node.as_deref(), limit)
            .await?
            .into_iter()
            .map(|event| {
                [
                    event.received_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                    event.event_type,
                    event.host.unwrap_or_else(|| "-".to_owned()),
                    event.instance_uuid.unwrap_or_else(|| "-".to_owned()),
                    event.status.to_string(),
                    event.error.unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["Received (UTC)", "Event type", "Host", "Instance", "Status", "Error"], &rows);
        Ok(ExitCode::SUCCESS)
    })
}
