//! `agent …` and `node facts NAME`: the node agents (docs/adr/0012-agent.md) through the
//! controller's request path — the same requester, timeouts and retries as the controller
//! agent (`[agent] agent_confirm_timeout`, `agent_response_timeout`, `request_retries`,
//! `backoff_factor`), with the controller's broker user from `[DEFAULT] transport_url`.

use std::process::ExitCode;

use aos_agent::protocol::{LocalCheck, Request};
use aos_daemon::CommonArgs;

use super::config::print_table;

#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Ask a node's agent for its facts (processes, instances as libvirt sees them, storages).
    Facts(FactsArgs),
    /// Ask a node's agent to run one local check.
    Check {
        name: String,
        #[arg(value_parser = ["nova-compute", "libvirt", "storages"])]
        check: String,
    },
    /// Ask a node's agent to write its state file to its storages now.
    WriteStateFile { name: String },
    /// Every node agent's last heartbeat as the controller agent recorded it.
    List,
    /// Forget a decommissioned node's agent (the tracker then treats the node as agentless).
    Forget { name: String },
    /// Print the rabbitmqctl commands that create node NAME's broker user with the trust
    /// model's permissions (user `[agent] node_user_prefix` + NAME).
    RabbitmqCommands {
        name: String,
        /// The RabbitMQ virtual host (default: the one of `[DEFAULT] transport_url`).
        #[arg(long)]
        vhost: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct FactsArgs {
    /// Hypervisor host name, as Nova names it (and the node agent's `[DEFAULT] host`).
    pub name: String,
}

pub fn run(common: &CommonArgs, command: AgentCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    super::runtime()?.block_on(async move {
        match command {
            AgentCommand::Facts(args) => ask(&config, &args.name, Request::Facts).await,
            AgentCommand::Check { name, check } => {
                let check = match check.as_str() {
                    "nova-compute" => LocalCheck::NovaCompute,
                    "libvirt" => LocalCheck::Libvirt,
                    _ => LocalCheck::Storages,
                };
                ask(&config, &name, Request::Check { check }).await
            }
            AgentCommand::WriteStateFile { name } => ask(&config, &name, Request::WriteStateFile).await,
            AgentCommand::List => list(&config).await,
            AgentCommand::Forget { name } => {
                let db = super::connect(&config).await?;
                aos_daemon::startup::ensure_schema_current(&db).await?;
                if aos_db::forget_agent(&db, &name).await? {
                    println!("forgot the agent of {name}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no agent heartbeat recorded for {name}");
                    Ok(ExitCode::from(2))
                }
            }
            AgentCommand::RabbitmqCommands { name, vhost } => {
                if let Err(error) = aos_agent::protocol::check_node_name(&name) {
                    eprintln!("{error}");
                    return Ok(ExitCode::from(2));
                }
                let vhost = vhost.unwrap_or_else(|| config.default.transport_url.virtual_host.clone());
                let user = format!("{}{name}", config.agent.node_user_prefix);
                for line in aos_agent::trust::node_user_commands(&vhost, &user, &name) {
                    println!("{line}");
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// `node facts NAME`.
pub async fn facts(config: &aos_config::Config, node: &str) -> anyhow::Result<ExitCode> {
    ask(config, node, Request::Facts).await
}

/// Sends one request and prints the response as JSON; exit 1 when the node did not answer.
async fn ask(config: &aos_config::Config, node: &str, request: Request) -> anyhow::Result<ExitCode> {
    if let Err(error) = aos_agent::protocol::check_node_name(node) {
        eprintln!("{error}");
        return Ok(ExitCode::from(2));
    }
    let requester = aos_agent::connect_requester(config).await?;
    let outcome = requester.request(node, &request).await;
    requester.close().await;
    match outcome {
        Ok(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer.response)?);
            if answer.attempts > 1 {
                eprintln!("(answered after {} sends)", answer.attempts);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn list(config: &aos_config::Config) -> anyhow::Result<ExitCode> {
    let db = super::connect(config).await?;
    aos_daemon::startup::ensure_schema_current(&db).await?;
    let now = chrono::Utc::now();
    let liveness = aos_db::agent_liveness(&db, now).await?;
    let mut rows = Vec::new();
    for (node, alive) in liveness {
        let Some(row) = aos_db::find_agent_heartbeat(&db, &node).await? else { continue };
        rows.push([
            node,
            if alive { "alive" } else { "silent" }.to_owned(),
            row.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            format!("{:.0} s", (now - row.received_at).num_milliseconds() as f64 / 1000.0),
            row.sequence.to_string(),
        ]);
    }
    print_table(&["node", "agent", "last heartbeat", "age", "sequence"], &rows);
    Ok(ExitCode::SUCCESS)
}
