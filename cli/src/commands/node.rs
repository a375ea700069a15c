//! `node list` and `node show NAME`: the nodes as the suite sees them (its HA state next to
//! Nova's view), and a node's recent history.

use std::process::ExitCode;

use aos_daemon::CommonArgs;

use super::config::print_table;

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Every node: HA state, Nova's status/state/forced-down, evacuation policy.
    List,
    /// Mirror Nova's compute hosts into the node table now (what the beat does every
    /// `[node_sync] sync_interval`), with the `[keystone_authtoken]` credentials.
    Sync,
    /// One node and its latest events.
    Show {
        /// Hypervisor host name, as Nova names it.
        name: String,
        /// How many events to show.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// A node's whole timeline: every transition, decision and task step, oldest first.
    History {
        name: String,
        #[arg(long, default_value_t = 500)]
        limit: u64,
    },
    /// Evacuate a node now (an operator's decision: the storm guard, the policy and the
    /// isolation check do not apply; the node is still fenced first unless --skip-fence).
    Evacuate {
        name: String,
        /// Print the plan (priority groups, capacity check) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not power the node off first. Only when you know it is off or isolated from
        /// its storage: a node that still runs would run its servers twice.
        #[arg(long)]
        skip_fence: bool,
    },
    /// Maintenance on: the tracker leaves the node alone. Off: judged again (up after
    /// `[node_tracker] mutex_up` observations).
    Maintenance {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        switch: String,
    },
    /// The node's own evacuation flag (automatic evacuation allowed or denied).
    Evacuation {
        name: String,
        #[arg(value_parser = ["allow", "deny"])]
        policy: String,
    },
    /// Planned shutdown with evacuation: maintenance, disabled in Nova, powered off through
    /// its power device; once Nova sees it down (`[power] shutdown_interval` x
    /// `shutdown_max_tick`) its servers are evacuated by priority.
    Shutdown { name: String },
    /// After an incident: clear Nova's forced_down (start the node's nova-compute first) and
    /// let the tracker bring the node up.
    Recover { name: String },
    /// Ask the node's agent for its facts now (processes, instances as libvirt sees them,
    /// storages), through the controller's request path (`[agent]` timeouts and retries).
    Facts(super::agent::FactsArgs),
    /// Bind a node to its power device (the default one fencing uses): `NAME --device D
    /// [--outlet O]`, or many from `--from-file F`.
    Init(super::power::NodeInitArgs),
}

pub fn run(common: &CommonArgs, command: NodeCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        match command {
            NodeCommand::List => list(&db).await,
            NodeCommand::Sync => sync(&db, &config).await,
            NodeCommand::Show { name, limit } => show(&db, &name, limit).await,
            NodeCommand::Init(args) => super::power::node_init(&db, args).await,
            NodeCommand::History { name, limit } => history(&db, &name, limit).await,
            NodeCommand::Evacuate { name, dry_run: true, .. } => super::operator::dry_run(&db, &config, &name).await,
            NodeCommand::Evacuate { name, dry_run: false, skip_fence } => {
                super::operator::evacuate(&db, &config, &name, skip_fence).await
            }
            NodeCommand::Maintenance { name, switch } => super::operator::maintenance(&db, &name, switch == "on").await,
            NodeCommand::Evacuation { name, policy } => {
                super::operator::evacuation_policy(&db, &name, policy == "allow").await
            }
            NodeCommand::Shutdown { name } => super::operator::shutdown(&db, &config, &name).await,
            NodeCommand::Recover { name } => super::operator::recover(&db, &config, &name).await,
            NodeCommand::Facts(args) => super::agent::facts(&config, &args.name).await,
        }
    })
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

async fn list(db: &aos_db::DatabaseConnection) -> anyhow::Result<ExitCode> {
    let rows: Vec<[String; 6]> = aos_db::list_nodes(db)
        .await?
        .into_iter()
        .map(|node| {
            let nova = if node.removed_from_nova {
                "removed from Nova".to_owned()
            } else {
                format!(
                    "{}/{}{}",
                    or_dash(node.nova_status.as_deref()),
                    or_dash(node.nova_state.as_deref()),
                    if node.nova_forced_down { " forced-down" } else { "" }
                )
            };
            [
                node.name,
                node.state.to_string(),
                nova,
                if node.evacuation_allowed { "allowed" } else { "denied" }.to_owned(),
                if node.is_reserve { "yes" } else { "no" }.to_owned(),
                node.state_changed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(&["Name", "State", "Nova (status/state)", "Evacuation", "Reserve", "State since (UTC)"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn show(db: &aos_db::DatabaseConnection, name: &str, limit: u64) -> anyhow::Result<ExitCode> {
    let Some(node) = aos_db::find_node(db, name).await? else {
        eprintln!("error: no node named {name:?} (run `aos-cloud-manager node list`)");
        return Ok(ExitCode::from(2));
    };
    let fields = [
        ("name", node.name.clone()),
        ("state", node.state.to_string()),
        ("state since", node.state_changed_at.to_rfc3339()),
        ("nova service id", or_dash(node.nova_service_id.as_deref())),
        ("nova status", or_dash(node.nova_status.as_deref())),
        ("nova state", or_dash(node.nova_state.as_deref())),
        ("nova forced down", node.nova_forced_down.to_string()),
        ("hypervisor id", or_dash(node.hypervisor_id.as_deref())),
        ("evacuation allowed", node.evacuation_allowed.to_string()),
        ("reserve", node.is_reserve.to_string()),
        ("removed from nova", node.removed_from_nova.to_string()),
    ];
    let rows: Vec<[String; 2]> = fields.into_iter().map(|(key, value)| [key.to_owned(), value]).collect();
    print_table(&["Field", "Value"], &rows);
    out!("");
    let events: Vec<[String; 6]> = aos_db::node_history(db, node.id, limit).await?.into_iter().map(event_row).collect();
    print_table(&EVENT_COLUMNS, &events);
    Ok(ExitCode::SUCCESS)
}

const EVENT_COLUMNS: [&str; 6] = ["Time (UTC)", "Event", "Transition", "Actor", "Task", "Reason"];

/// One line of a node's timeline.
fn event_row(event: aos_db::entity::node_event::Model) -> [String; 6] {
    let transition = match (&event.from_state, &event.to_state) {
        (Some(from), Some(to)) => format!("{from} -> {to}"),
        _ => "-".to_owned(),
    };
    [
        event.occurred_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        event.kind,
        transition,
        event.actor,
        event.task_id.map(|id| id.chars().take(8).collect()).unwrap_or_else(|| "-".to_owned()),
        event.reason,
    ]
}

async fn history(db: &aos_db::DatabaseConnection, name: &str, limit: u64) -> anyhow::Result<ExitCode> {
    let Some(node) = aos_db::find_node(db, name).await? else {
        eprintln!("error: no node named {name:?} (run `aos-cloud-manager node list`)");
        return Ok(ExitCode::from(2));
    };
    let mut events = aos_db::node_history(db, node.id, limit).await?;
    events.reverse();
    let rows: Vec<[String; 6]> = events.into_iter().map(event_row).collect();
    print_table(&EVENT_COLUMNS, &rows);
    Ok(ExitCode::SUCCESS)
}

async fn sync(db: &aos_db::DatabaseConnection, config: &aos_config::Config) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let settings = aos_openstack::AuthSettings::from(&config.keystone_authtoken);
    let client = aos_openstack::OpenStackClient::connect(settings).await.with_context(|| {
        format!("cannot reach OpenStack at {} ([keystone_authtoken])", config.keystone_authtoken.auth_url)
    })?;
    let report = aos_beat::node_sync::sync_once(db, &client, None, "aos-cloud-manager node sync").await?;
    out!(
        "node sync: {} added, {} changed, {} removed from Nova, {} back in Nova, {} unchanged",
        report.added.len(),
        report.updated.len(),
        report.removed.len(),
        report.returned.len(),
        report.unchanged
    );
    for (what, hosts) in [
        ("added", &report.added),
        ("changed", &report.updated),
        ("removed", &report.removed),
        ("returned", &report.returned),
    ] {
        if !hosts.is_empty() {
            out!("  {what}: {}", hosts.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
