//! `balance preview|run [--aggregate A]`: RAM balancing of host aggregates (aos-balance,
//! docs/adr/0014-balancing.md).
//!
//! `preview` reads the cloud, plans, and prints the live migrations and each host's load before
//! and after; nothing is changed. `run` prints the same plan, records it as a
//! `balance_aggregate` task and executes it here, in the foreground (one step per live
//! migration, `--concurrency` in flight, `[balancing] migration_retries`), then prints each
//! migration's outcome and the loads found afterwards.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use aos_balance::{BalanceTask, CloudSnapshot, ExecuteSettings, Gathered, Plan, PlannerSettings};
use aos_daemon::CommonArgs;
use aos_openstack::OpenStackClient;
use clap::Subcommand;
use serde_json::json;

use super::config::print_table;

#[derive(Subcommand)]
pub enum BalanceCommand {
    /// Plan only (dry run): the live migrations that would bring every host of each aggregate
    /// inside the band, and each host's load before and after.
    Preview(BalanceArgs),
    /// Plan and execute the live migrations, recorded as a task (see `task show ID`).
    Run(RunArgs),
}

#[derive(clap::Args)]
pub struct BalanceArgs {
    /// Only this host aggregate (name or id); default: every aggregate that has hosts.
    #[arg(long)]
    aggregate: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    balance: BalanceArgs,
    /// Live migrations in flight at once (per aggregate).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
}

pub fn run(common: &CommonArgs, command: BalanceCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    super::runtime()?.block_on(async move {
        match command {
            BalanceCommand::Preview(args) => preview(&config, &args).await,
            BalanceCommand::Run(args) => execute(&config, &args).await,
        }
    })
}

fn planner_settings(config: &aos_config::Config) -> PlannerSettings {
    PlannerSettings::from_config(&config.balancing)
}

async fn connect_openstack(config: &aos_config::Config) -> anyhow::Result<OpenStackClient> {
    let settings = aos_openstack::AuthSettings::from(&config.keystone_authtoken);
    OpenStackClient::connect(settings).await.with_context(|| {
        format!("cannot reach OpenStack at {} ([keystone_authtoken])", config.keystone_authtoken.auth_url)
    })
}

/// Reads the cloud once and plans every aggregate asked for.
async fn plan_all(
    config: &aos_config::Config,
    client: &OpenStackClient,
    aggregate: Option<&str>,
) -> anyhow::Result<Vec<(Gathered, Plan)>> {
    let snapshot = CloudSnapshot::read(client).await.context("cannot read the cloud")?;
    let deny_hosts: BTreeSet<String> = config.balancing.deny_hosts.iter().cloned().collect();
    let mut plans = Vec::new();
    for aggregate in snapshot.aggregates_named(aggregate)? {
        let gathered = snapshot.input_for(aggregate, &deny_hosts);
        let plan = aos_balance::plan(&gathered.input, &planner_settings(config))
            .with_context(|| format!("cannot plan aggregate {}", aggregate.name))?;
        plans.push((gathered, plan));
    }
    Ok(plans)
}

fn plan_json(gathered: &Gathered, plan: &Plan) -> serde_json::Value {
    json!({ "plan": plan, "left_out": gathered.left_out })
}

async fn preview(config: &aos_config::Config, args: &BalanceArgs) -> anyhow::Result<ExitCode> {
    let client = connect_openstack(config).await?;
    let plans = plan_all(config, &client, args.aggregate.as_deref()).await?;
    if args.json {
        let all: Vec<serde_json::Value> = plans.iter().map(|(gathered, plan)| plan_json(gathered, plan)).collect();
        out!("{}", serde_json::to_string_pretty(&all)?);
    } else if plans.is_empty() {
        out!("no host aggregate has hosts: nothing to balance");
    } else {
        for (gathered, plan) in &plans {
            print_plan(gathered, plan, config.balancing.approx);
        }
        out!("(preview: nothing was changed; `aos-cloud-manager balance run` executes the plan)");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(gathered: &Gathered, plan: &Plan, approx: f64) {
    let servers = gathered.input.servers.len();
    let pinned = gathered.input.servers.iter().filter(|server| server.pinned.is_some()).count();
    out!(
        "aggregate {}: {} host(s), {servers} server(s) ({pinned} not movable); load {:.3} (RAM {:.3}, vCPU {:.3}), \
         a host is loaded above {:.3} (approx {approx})",
        plan.aggregate,
        plan.hosts.len(),
        plan.aggregate_load,
        plan.ram_load,
        plan.vcpu_load,
        plan.threshold
    );
    let rows: Vec<[String; 5]> = plan
        .hosts
        .iter()
        .map(|host| {
            let mark = |loaded: bool| if loaded { " loaded" } else { "" };
            [
                host.name.clone(),
                format!("{} → {} of {}", host.ram_mb.used, host.ram_used_after, host.ram_mb.capacity),
                format!("{} → {} of {}", host.vcpus.used, host.vcpus_used_after, host.vcpus.capacity),
                format!("{:.3}{}", host.load_before, mark(host.loaded_before)),
                format!("{:.3}{}", host.load_after, mark(host.loaded_after)),
            ]
        })
        .collect();
    print_table(&["Host", "RAM MB used before → after of capacity", "vCPUs", "Load before", "Load after"], &rows);
    for left_out in &gathered.left_out {
        out!("left out: {} ({})", left_out.host, left_out.reason);
    }
    if plan.migrations.is_empty() {
        out!("no live migration planned");
    } else {
        out!("{} live migration(s), {} MB moved, in this order:", plan.migrations.len(), plan.moved_ram_mb());
        let rows: Vec<[String; 6]> = plan
            .migrations
            .iter()
            .enumerate()
            .map(|(index, migration)| {
                [
                    (index + 1).to_string(),
                    migration.server_name.clone(),
                    migration.server_id.clone(),
                    migration.source.clone(),
                    migration.target.clone(),
                    format!("{} MB / {} vCPU", migration.ram_mb, migration.vcpus),
                ]
            })
            .collect();
        print_table(&["#", "Server", "Id", "From", "To", "Size"], &rows);
    }
    let still: Vec<&str> = plan.still_loaded().map(|host| host.name.as_str()).collect();
    if still.is_empty() {
        out!("after the plan every host is inside the band");
    } else {
        out!("after the plan still loaded (nothing movable fits elsewhere): {}", still.join(", "));
    }
    out!("");
}

/// Who the task is recorded as.
fn actor() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "operator".into());
    format!("{user} (cli)")
}

async fn execute(config: &aos_config::Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let client = connect_openstack(config).await?;
    let db = super::connect(config).await?;
    aos_daemon::startup::ensure_schema_current(&db).await?;
    let plans = plan_all(config, &client, args.balance.aggregate.as_deref()).await?;
    let queue = if db.get_database_backend() == aos_db::DbBackend::Sqlite {
        aos_jobs::JobQueue::sqlite(&db).await?
    } else {
        aos_jobs::JobQueue::connect_amqp(&config.default.transport_url.to_amqp_uri(), &config.worker.queue_prefix)
            .await?
    };
    let settings = ExecuteSettings {
        concurrency: usize::from(args.concurrency),
        migration_retries: config.balancing.migration_retries,
        ..ExecuteSettings::default()
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    let identity = format!("balance-cli@{}:{}", host.trim(), std::process::id());
    let runner = aos_balance::register_tasks(
        aos_jobs::JobRunner::new(db.clone(), queue.clone(), identity, 1),
        client.clone(),
        settings,
    );
    let mut all_succeeded = true;
    let mut report = Vec::new();
    for (gathered, plan) in &plans {
        if !args.balance.json {
            print_plan(gathered, plan, config.balancing.approx);
        }
        if plan.migrations.is_empty() {
            report.push(json!({ "plan": plan, "left_out": gathered.left_out, "task": null }));
            continue;
        }
        let payload = BalanceTask {
            aggregate: plan.aggregate.clone(),
            migrations: plan.migrations.clone(),
            actor: actor(),
            settings: planner_settings(config),
            deny_hosts: config.balancing.deny_hosts.clone(),
        };
        let new = aos_jobs::NewTask::new(aos_balance::BALANCE_AGGREGATE, serde_json::to_value(&payload)?);
        let task_id = aos_jobs::insert_task(&db, &new).await?.task_id;
        if !args.balance.json {
            out!("executing as task {task_id} ...");
        }
        let mut outcome = runner.process_one(task_id).await?;
        // A failure of our own bookkeeping: run again (succeeded migrations are skipped).
        for _ in 0..3 {
            let aos_jobs::ProcessOutcome::RetryLater { error } = &outcome else { break };
            eprintln!("warning: task {task_id} will be run again: {error}");
            tokio::time::sleep(Duration::from_secs(5)).await;
            outcome = runner.process_one(task_id).await?;
        }
        let succeeded = outcome == aos_jobs::ProcessOutcome::Succeeded;
        all_succeeded &= succeeded;
        let steps = aos_ha::store::task_with_steps(&db, &task_id.to_string()).await?.map(|(_, steps)| steps);
        let steps = steps.unwrap_or_default();
        if args.balance.json {
            let steps: Vec<serde_json::Value> = steps
                .iter()
                .map(|step| json!({ "server_id": step.target, "state": step.state, "details": step.details, "error": step.error }))
                .collect();
            report.push(json!({
                "plan": plan,
                "left_out": gathered.left_out,
                "task": { "id": task_id.to_string(), "outcome": format!("{outcome:?}"), "steps": steps },
            }));
        } else {
            let rows: Vec<[String; 4]> = steps
                .iter()
                .map(|step| {
                    let details = step.details.as_ref();
                    let attempts = details.and_then(|d| d.get("attempts")).map(ToString::to_string).unwrap_or_default();
                    let seconds = details
                        .and_then(|d| d.get("seconds"))
                        .and_then(serde_json::Value::as_f64)
                        .map(|s| format!("{s:.1} s"))
                        .unwrap_or_default();
                    let skipped = details.and_then(|d| d.get("skipped")).and_then(serde_json::Value::as_str);
                    let state = match skipped {
                        Some(_) => "skipped".to_owned(),
                        None => step.state.to_string(),
                    };
                    let note = match skipped {
                        Some(reason) => reason.to_owned(),
                        None => step.error.clone().unwrap_or(seconds),
                    };
                    [format!("{} {}", step.name, step.target), state, attempts, note]
                })
                .collect();
            print_table(&["Server", "Step", "Attempts", "Took / error"], &rows);
            out!("task {task_id}: {outcome:?}");
        }
    }
    queue.close().await;
    if !plans.is_empty() && plans.iter().any(|(_, plan)| !plan.migrations.is_empty()) {
        // The loads as the cloud reports them now.
        let after = plan_all(config, &client, args.balance.aggregate.as_deref()).await?;
        if args.balance.json {
            let after: Vec<serde_json::Value> =
                after.iter().map(|(gathered, plan)| plan_json(gathered, plan)).collect();
            out!("{}", serde_json::to_string_pretty(&json!({ "runs": report, "after": after }))?);
        } else {
            out!("loads found afterwards:");
            for (_, plan) in &after {
                let rows: Vec<[String; 3]> = plan
                    .hosts
                    .iter()
                    .map(|host| {
                        [
                            host.name.clone(),
                            format!("{} of {}", host.ram_mb.used, host.ram_mb.capacity),
                            format!("{:.3}{}", host.load_before, if host.loaded_before { " loaded" } else { "" }),
                        ]
                    })
                    .collect();
                out!("aggregate {} (threshold {:.3}):", plan.aggregate, plan.threshold);
                print_table(&["Host", "RAM MB used", "Load"], &rows);
            }
        }
    } else if args.balance.json {
        out!("{}", serde_json::to_string_pretty(&json!({ "runs": report, "after": [] }))?);
    } else {
        out!("nothing to migrate");
    }
    Ok(if all_succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
