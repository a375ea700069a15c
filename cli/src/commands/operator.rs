//! Operator commands on nodes (`node evacuate|maintenance|evacuation|recover`) over
//! `aos_ha::operator`, and `task list|show`, `alarm list`.

use std::process::ExitCode;

use anyhow::Context as _;
use aos_daemon::CommonArgs;
use aos_ha::operator::{self, OperatorError};

use super::config::print_table;

/// Who an operator command is recorded as: the Unix user running it.
fn actor() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "operator".into());
    format!("{user} (cli)")
}

async fn connect_cloud(config: &aos_config::Config) -> anyhow::Result<aos_ha::OpenStackCloud> {
    let settings = aos_openstack::AuthSettings::from(&config.keystone_authtoken);
    let client = aos_openstack::OpenStackClient::connect(settings).await.with_context(|| {
        format!("cannot reach OpenStack at {} ([keystone_authtoken])", config.keystone_authtoken.auth_url)
    })?;
    Ok(aos_ha::OpenStackCloud::new(client))
}

/// Operator errors are the user's to fix: print them plainly, exit 2.
fn refused(error: OperatorError) -> anyhow::Result<ExitCode> {
    match error {
        OperatorError::UnknownNode(_) | OperatorError::Refused(_) => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(2))
        }
        other => Err(other.into()),
    }
}

pub async fn dry_run(
    db: &aos_db::DatabaseConnection,
    config: &aos_config::Config,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let cloud = connect_cloud(config).await?;
    let plan = match operator::dry_run(db, &cloud, name, config.host_tasks.recovery_priority).await {
        Ok(plan) => plan,
        Err(error) => return refused(error),
    };
    out!("evacuation plan for {name} (dry run: nothing done)");
    let mut rows = Vec::new();
    for group in &plan.groups {
        for server in &group.servers {
            rows.push([
                group.priority.to_string(),
                server.name.clone(),
                server.id.clone(),
                server.expected_status.clone(),
                format!("{} vCPU / {} MiB", server.vcpus, server.ram_mb),
            ]);
        }
    }
    for server in &plan.skipped {
        rows.push(["0 (stays)".into(), server.name.clone(), server.id.clone(), "-".into(), "-".into()]);
    }
    print_table(&["Priority", "Server", "Id", "Expected after", "Size"], &rows);
    let capacity = &plan.capacity;
    out!(
        "capacity: needs {} vCPU / {} MiB; free on the remaining hosts {} vCPU / {} MiB; {}",
        capacity.needed_vcpus,
        capacity.needed_ram_mb,
        capacity.free_vcpus,
        capacity.free_ram_mb,
        if capacity.sufficient() {
            "every server fits".to_owned()
        } else {
            format!("{} server(s) do not fit", capacity.unplaced.len())
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn evacuate(
    db: &aos_db::DatabaseConnection,
    config: &aos_config::Config,
    name: &str,
    skip_fence: bool,
) -> anyhow::Result<ExitCode> {
    let task_id = match operator::request_evacuation(db, name, skip_fence, &actor()).await {
        Ok(task_id) => task_id,
        Err(error) => return refused(error),
    };
    publish(db, config, task_id).await;
    out!("evacuation of {name} requested: task {task_id} (follow it with `aos-cloud-manager task show {task_id}`)");
    Ok(ExitCode::SUCCESS)
}

pub async fn shutdown(
    db: &aos_db::DatabaseConnection,
    config: &aos_config::Config,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let task_id = match operator::request_shutdown(db, name, &actor()).await {
        Ok(task_id) => task_id,
        Err(error) => return refused(error),
    };
    publish(db, config, task_id).await;
    out!("shutdown of {name} requested: task {task_id} (follow it with `aos-cloud-manager task show {task_id}`)");
    Ok(ExitCode::SUCCESS)
}

/// Publishes a recorded task; if the queue is unreachable the beat's sweep publishes it.
async fn publish(db: &aos_db::DatabaseConnection, config: &aos_config::Config, task_id: aos_jobs::TaskId) {
    let opened = if db.get_database_backend() == aos_db::DbBackend::Sqlite {
        aos_jobs::JobQueue::sqlite(db).await
    } else {
        aos_jobs::JobQueue::connect_amqp(&config.default.transport_url.to_amqp_uri(), &config.worker.queue_prefix).await
    };
    match opened {
        Ok(queue) => {
            if let Err(error) = queue.publish(task_id).await {
                eprintln!("warning: task recorded but not published ({error}); the beat publishes it within a minute");
            }
            queue.close().await;
        }
        Err(error) => {
            eprintln!("warning: the job queue is unreachable ({error}); the beat publishes the task within a minute")
        }
    }
}

pub async fn maintenance(db: &aos_db::DatabaseConnection, name: &str, on: bool) -> anyhow::Result<ExitCode> {
    match operator::set_maintenance(db, name, on, &actor()).await {
        Ok(state) => {
            out!("{name} is now {state}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => refused(error),
    }
}

pub async fn evacuation_policy(db: &aos_db::DatabaseConnection, name: &str, allowed: bool) -> anyhow::Result<ExitCode> {
    match operator::set_evacuation_allowed(db, name, allowed, &actor()).await {
        Ok(()) => {
            out!("automatic evacuation of {name}: {}", if allowed { "allowed" } else { "denied" });
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => refused(error),
    }
}

pub async fn recover(
    db: &aos_db::DatabaseConnection,
    config: &aos_config::Config,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let cloud = connect_cloud(config).await?;
    match operator::recover(db, &cloud, name, &actor()).await {
        Ok(()) => {
            out!("{name}: forced_down cleared; the tracker brings it up after [node_tracker] mutex_up observations");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => refused(error),
    }
}

#[derive(clap::Subcommand)]
pub enum TaskCommand {
    /// Tasks, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Only tasks about this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// One task with its steps.
    Show { id: String },
}

#[derive(clap::Subcommand)]
pub enum AlarmCommand {
    /// Alarms, newest first (open ones unless --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

pub fn run_task(common: &CommonArgs, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        match command {
            TaskCommand::List { limit, node } => task_list(&db, limit, node.as_deref()).await,
            TaskCommand::Show { id } => task_show(&db, &id).await,
        }
    })
}

pub fn run_alarm(common: &CommonArgs, command: AlarmCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    let AlarmCommand::List { all, limit } = command;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        let nodes: std::collections::BTreeMap<i64, String> =
            aos_db::list_nodes(&db).await?.into_iter().map(|node| (node.id, node.name)).collect();
        let rows: Vec<[String; 6]> = aos_ha::store::list_alarms(&db, all, limit)
            .await?
            .into_iter()
            .map(|alarm| {
                [
                    alarm.raised_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    alarm.kind,
                    alarm.severity,
                    alarm.node_id.and_then(|id| nodes.get(&id).cloned()).unwrap_or_else(|| "-".into()),
                    alarm
                        .cleared_at
                        .map(|at| format!("cleared {}", at.format("%H:%M:%S")))
                        .unwrap_or_else(|| "open".into()),
                    alarm.message,
                ]
            })
            .collect();
        print_table(&["Raised (UTC)", "Kind", "Severity", "Node", "State", "Message"], &rows);
        Ok(ExitCode::SUCCESS)
    })
}

async fn task_list(db: &aos_db::DatabaseConnection, limit: u64, node: Option<&str>) -> anyhow::Result<ExitCode> {
    let nodes: std::collections::BTreeMap<i64, String> =
        aos_db::list_nodes(db).await?.into_iter().map(|node| (node.id, node.name)).collect();
    let node_id = match node {
        None => None,
        Some(name) => match nodes.iter().find(|(_, n)| n.as_str() == name) {
            Some((id, _)) => Some(*id),
            None => {
                eprintln!("error: no node named {name:?}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let rows: Vec<[String; 7]> = aos_ha::store::list_tasks(db, limit, node_id)
        .await?
        .into_iter()
        .map(|task| {
            [
                task.id,
                task.kind,
                task.node_id.and_then(|id| nodes.get(&id).cloned()).unwrap_or_else(|| "-".into()),
                task.state.to_string(),
                task.attempts.to_string(),
                task.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                task.error.unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["Id", "Kind", "Node", "State", "Attempts", "Created (UTC)", "Error"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn task_show(db: &aos_db::DatabaseConnection, id: &str) -> anyhow::Result<ExitCode> {
    let Some((task, steps)) = aos_ha::store::task_with_steps(db, id).await? else {
        eprintln!("error: no task {id:?} (see `aos-cloud-manager task list`)");
        return Ok(ExitCode::from(2));
    };
    let fields = [
        ("id", task.id.clone()),
        ("kind", task.kind.clone()),
        ("state", task.state.to_string()),
        ("attempts", task.attempts.to_string()),
        ("claimed by", task.claimed_by.clone().unwrap_or_else(|| "-".into())),
        ("created", task.created_at.to_rfc3339()),
        ("finished", task.finished_at.map(|at| at.to_rfc3339()).unwrap_or_else(|| "-".into())),
        ("payload", task.payload.as_ref().map(|p| p.to_string()).unwrap_or_default()),
        ("error", task.error.clone().unwrap_or_default()),
    ];
    let rows: Vec<[String; 2]> = fields.into_iter().map(|(key, value)| [key.to_owned(), value]).collect();
    print_table(&["Field", "Value"], &rows);
    out!("");
    let steps: Vec<[String; 7]> = steps
        .into_iter()
        .map(|step| {
            [
                step.seq.to_string(),
                step.name,
                step.target,
                step.state.to_string(),
                step.attempts.to_string(),
                step.finished_at.map(|at| at.format("%H:%M:%S%.3f").to_string()).unwrap_or_else(|| "-".into()),
                step.error.unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["#", "Step", "Target", "State", "Attempts", "Finished (UTC)", "Error"], &steps);
    if let Some(result) = &task.result {
        out!("");
        out!("result: {}", serde_json::to_string_pretty(result).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum ReserveCommand {
    /// Make RESERVE a standby host that the recovery of MAIN brings up when capacity is short
    /// (power it off and disable it in Nova yourself; this records the binding).
    Add {
        reserve: String,
        #[arg(long = "for", value_name = "MAIN")]
        main: String,
        /// Higher first when several reserves back one host.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Boot it over PXE when bringing it up: the MAC address of its boot NIC
        /// (a pxelinux.cfg file is written in [pxe] conf_dir and the BMC's next boot set to PXE).
        #[arg(long, value_name = "MAC")]
        boot_mac: Option<aos_power::MacAddress>,
    },
    /// Remove a reserve binding.
    Remove {
        reserve: String,
        #[arg(long = "for", value_name = "MAIN")]
        main: String,
    },
    /// Every reserve binding, and the reserve pool.
    List,
    /// The powered-off reserve pool: idle hosts parked after [node_sync] reserve_interval.
    #[command(subcommand)]
    Pool(PoolCommand),
}

#[derive(clap::Subcommand)]
pub enum PoolCommand {
    /// Let NODE be parked (disabled in Nova, powered off) when it has had no instances for
    /// [node_sync] reserve_interval; recoveries bring it up when capacity is short.
    Add {
        node: String,
        /// Boot it over PXE when bringing it up (MAC address of its boot NIC).
        #[arg(long, value_name = "MAC")]
        boot_mac: Option<aos_power::MacAddress>,
    },
    /// NODE is no longer parked when idle.
    Remove { node: String },
    /// Pool members, their state and since when they are idle.
    List,
}

pub fn run_reserve(common: &CommonArgs, command: ReserveCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        match command {
            ReserveCommand::Add { reserve, main, priority, boot_mac } => {
                match aos_ha::reserve::add(&db, &reserve, &main, priority, boot_mac, &actor()).await {
                    Ok(()) => {
                        out!("{reserve} is a reserve host for {main} (priority {priority})");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(error) => refused(error),
                }
            }
            ReserveCommand::Remove { reserve, main } => match aos_ha::reserve::remove(&db, &reserve, &main).await {
                Ok(()) => {
                    out!("{reserve} no longer backs {main}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => refused(error),
            },
            ReserveCommand::List => {
                let rows: Vec<[String; 4]> = aos_ha::reserve::list(&db)
                    .await?
                    .into_iter()
                    .map(|(reserve, main, priority, state)| [reserve, main, priority.to_string(), state.to_string()])
                    .collect();
                print_table(&["Reserve", "For", "Priority", "Reserve state"], &rows);
                let pool = aos_ha::reserve::pool_list(&db).await?;
                if !pool.is_empty() {
                    out!("");
                    print_pool(pool);
                }
                Ok(ExitCode::SUCCESS)
            }
            ReserveCommand::Pool(PoolCommand::Add { node, boot_mac }) => {
                let fencer = aos_ha::PowerFencer::from_config(db.clone(), &config);
                match aos_ha::reserve::pool_add(&db, &fencer, &node, boot_mac, &actor()).await {
                    Ok(()) => {
                        out!(
                            "{node} joins the reserve pool: parked after {}s without instances",
                            config.node_sync.reserve_interval.as_secs()
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(error) => refused(error),
                }
            }
            ReserveCommand::Pool(PoolCommand::Remove { node }) => {
                match aos_ha::reserve::pool_remove(&db, &node, &actor()).await {
                    Ok(aos_db::entity::NodeState::Reserve) => {
                        out!(
                            "{node} left the reserve pool; it is parked now: power it on (power on {node}), enable \
                             its nova-compute, then node recover {node}"
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Ok(_) => {
                        out!("{node} left the reserve pool");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(error) => refused(error),
                }
            }
            ReserveCommand::Pool(PoolCommand::List) => {
                print_pool(aos_ha::reserve::pool_list(&db).await?);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn print_pool(pool: Vec<aos_ha::reserve::PoolMember>) {
    let rows: Vec<[String; 4]> = pool
        .into_iter()
        .map(|member| {
            [
                member.name,
                member.state.to_string(),
                member.idle_since.map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "-".into()),
                member.boot_mac.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["Pool member", "State", "Idle since (UTC)", "Boot MAC"], &rows);
}
