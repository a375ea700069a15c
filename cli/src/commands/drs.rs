//! `drs audit create|list|show`, `drs plan show|apply|cancel`: DRS audits and action plans
//! (aos-balance `drs`, docs/adr/0015-drs.md).
//!
//! `audit create` asks a source (our planner, or OpenStack Watcher configured in `[drs]`) and
//! records what it recommends as an action plan (`recommended`; older recommended plans of the
//! same scope become `superseded`). `plan apply` moves a recommended plan to `applying`,
//! records its `drs_apply_plan` task and runs it here in the foreground (like `balance run`),
//! then prints each action's state. `plan cancel` cancels a recommended or applying plan.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use aos_balance::drs::{PlannerRecommender, Recommender};
use aos_balance::watcher::{WatcherRecommender, WatcherSettings};
use aos_balance::{ExecuteSettings, PlannerSettings};
use aos_daemon::CommonArgs;
use aos_openstack::OpenStackClient;
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::config::print_table;

#[derive(Subcommand)]
pub enum DrsCommand {
    /// Audits: ask a source for recommendations, list them, show one.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Action plans: show, apply, cancel.
    #[command(subcommand)]
    Plan(PlanCommand),
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Ask a source for recommendations now; prints the audit and its action plan.
    Create(CreateArgs),
    /// The newest audits first.
    List(ListArgs),
    /// One audit with its action plan.
    Show(ShowArgs),
}

#[derive(Subcommand)]
pub enum PlanCommand {
    /// An action plan with its actions and their states.
    Show(ShowArgs),
    /// Apply a recommended plan: its live migrations run here, recorded as a task.
    Apply(ApplyArgs),
    /// Cancel a recommended or applying plan.
    Cancel(ShowArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// aos-cloud-manager's planner (`[balancing]` settings).
    Planner,
    /// OpenStack Watcher (`[drs] host`, `port`, `username`, `password`).
    Watcher,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Only this host aggregate (name or id); default: every aggregate.
    #[arg(long)]
    aggregate: Option<String>,
    /// Where recommendations come from; default: Watcher when `[drs] host` is set, else the planner.
    #[arg(long, value_enum)]
    source: Option<Source>,
    /// Watcher's goal.
    #[arg(long, default_value = aos_balance::watcher::DEFAULT_GOAL)]
    goal: String,
    /// Watcher's strategy (default: Watcher chooses one for the goal).
    #[arg(long)]
    strategy: Option<String>,
    /// A strategy parameter for Watcher, `name=value` (a JSON value, or else a string); repeatable.
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    parameters: Vec<String>,
    /// How long to wait for Watcher's audit, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long, default_value_t = 50)]
    limit: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    id: String,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    id: String,
    /// Live migrations in flight at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    #[arg(long)]
    json: bool,
}

pub fn run(common: &CommonArgs, command: DrsCommand) -> anyhow::Result<ExitCode> {
    let config = common.load()?.config;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        aos_daemon::startup::ensure_schema_current(&db).await?;
        match command {
            DrsCommand::Audit(AuditCommand::Create(args)) => create(&config, &db, &args).await,
            DrsCommand::Audit(AuditCommand::List(args)) => list(&db, &args).await,
            DrsCommand::Audit(AuditCommand::Show(args)) => show_audit(&db, &args).await,
            DrsCommand::Plan(PlanCommand::Show(args)) => show_plan(&db, &args).await,
            DrsCommand::Plan(PlanCommand::Apply(args)) => apply(&config, &db, &args).await,
            DrsCommand::Plan(PlanCommand::Cancel(args)) => cancel(&db, &args).await,
        }
    })
}

fn actor() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "operator".into());
    format!("{user} (cli)")
}

async fn connect_openstack(config: &aos_config::Config) -> anyhow::Result<OpenStackClient> {
    let settings = aos_openstack::AuthSettings::from(&config.keystone_authtoken);
    OpenStackClient::connect(settings).await.with_context(|| {
        format!("cannot reach OpenStack at {} ([keystone_authtoken])", config.keystone_authtoken.auth_url)
    })
}

/// `name=value` → (name, JSON value or string).
fn parameter(text: &str) -> anyhow::Result<(String, Value)> {
    let (name, value) = text
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .with_context(|| format!("--parameter {text:?}: expected NAME=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

async fn create(
    config: &aos_config::Config,
    db: &aos_db::DatabaseConnection,
    args: &CreateArgs,
) -> anyhow::Result<ExitCode> {
    let source = args.source.unwrap_or(if config.drs.host.is_empty() { Source::Planner } else { Source::Watcher });
    let client = connect_openstack(config).await?;
    let recommender: Box<dyn Recommender> = match source {
        Source::Planner => Box::new(PlannerRecommender {
            client,
            settings: PlannerSettings::from_config(&config.balancing),
            deny_hosts: config.balancing.deny_hosts.clone(),
        }),
        Source::Watcher => {
            let mut settings = WatcherSettings::from_config(config)
                .context("--source watcher: no DRS system is configured ([drs] host is empty)")?
                .map_err(anyhow::Error::msg)?;
            settings.goal = args.goal.clone();
            settings.strategy = args.strategy.clone();
            for text in &args.parameters {
                let (name, value) = parameter(text)?;
                settings.parameters.insert(name, value);
            }
            settings.timeout = Duration::from_secs(args.timeout);
            Box::new(WatcherRecommender::new(settings, Some(client)).map_err(anyhow::Error::msg)?)
        }
    };
    let started = std::time::Instant::now();
    let outcome =
        aos_balance::drs::run_audit(db, None, recommender.as_ref(), args.aggregate.as_deref(), "operator", &actor())
            .await?;
    let took = started.elapsed();
    if args.json {
        let audit = audit_json(db, &outcome.audit_id).await?;
        out!("{}", serde_json::to_string_pretty(&json!({ "audit": audit, "seconds": took.as_secs_f64() }))?);
    } else {
        print_audit(db, &outcome.audit_id).await?;
        out!("(audit took {:.1} s)", took.as_secs_f64());
    }
    Ok(if outcome.error.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn time(value: Option<chrono::DateTime<chrono::Utc>>) -> String {
    value.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

fn scope(scope: &str) -> &str {
    if scope.is_empty() { "(every aggregate)" } else { scope }
}

async fn list(db: &aos_db::DatabaseConnection, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let audits = aos_db::drs_list_audits(db, args.limit).await?;
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for audit in &audits {
        let plans = aos_db::drs_find_audit(db, &audit.id).await?.map(|(_, plans)| plans).unwrap_or_default();
        let plan = plans.last();
        rows.push([
            audit.id.clone(),
            time(Some(audit.created_at)),
            audit.source.clone(),
            scope(&audit.scope).to_owned(),
            audit.state.to_string(),
            plan.map(|p| p.id.clone()).unwrap_or_else(|| "-".into()),
            plan.map(|p| p.state.to_string()).unwrap_or_default(),
        ]);
        all.push(json!({ "audit": audit, "plans": plans }));
    }
    if args.json {
        out!("{}", serde_json::to_string_pretty(&all)?);
    } else if rows.is_empty() {
        out!("no DRS audit yet (`aos-cloud-manager drs audit create`)");
    } else {
        print_table(&["Audit", "Created", "Source", "Scope", "State", "Plan", "Plan state"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_json(db: &aos_db::DatabaseConnection, id: &str) -> anyhow::Result<Value> {
    let (audit, plans) = aos_db::drs_find_audit(db, id).await?.with_context(|| format!("no DRS audit {id}"))?;
    let mut with_actions = Vec::new();
    for plan in &plans {
        let actions = aos_db::drs_find_plan(db, &plan.id).await?.map(|(_, actions)| actions).unwrap_or_default();
        with_actions.push(json!({ "plan": plan, "actions": actions }));
    }
    Ok(json!({ "audit": audit, "plans": with_actions }))
}

async fn print_audit(db: &aos_db::DatabaseConnection, id: &str) -> anyhow::Result<()> {
    let (audit, plans) = aos_db::drs_find_audit(db, id).await?.with_context(|| format!("no DRS audit {id}"))?;
    out!(
        "audit {} ({}, {}): {} — by {} ({}) at {}{}",
        audit.id,
        audit.source,
        scope(&audit.scope),
        audit.state,
        audit.actor,
        audit.trigger,
        time(Some(audit.created_at)),
        audit.external_id.as_deref().map(|id| format!(", source's id {id}")).unwrap_or_default()
    );
    if let Some(error) = &audit.error {
        out!("error: {error}");
    }
    if plans.is_empty() && audit.error.is_none() {
        out!("no action recommended");
    }
    for plan in plans {
        print_plan(db, &plan.id).await?;
    }
    Ok(())
}

async fn show_audit(db: &aos_db::DatabaseConnection, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    if args.json {
        out!("{}", serde_json::to_string_pretty(&audit_json(db, &args.id).await?)?);
    } else {
        print_audit(db, &args.id).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn plan_json(db: &aos_db::DatabaseConnection, id: &str) -> anyhow::Result<Value> {
    let (plan, actions) = aos_db::drs_find_plan(db, id).await?.with_context(|| format!("no DRS action plan {id}"))?;
    Ok(json!({ "plan": plan, "actions": actions }))
}

async fn print_plan(db: &aos_db::DatabaseConnection, id: &str) -> anyhow::Result<()> {
    let (plan, actions) = aos_db::drs_find_plan(db, id).await?.with_context(|| format!("no DRS action plan {id}"))?;
    out!(
        "action plan {} ({}, {}): {}, {} action(s){}",
        plan.id,
        plan.source,
        scope(&plan.scope),
        plan.state,
        actions.len(),
        plan.task_id.as_deref().map(|task| format!(", task {task}")).unwrap_or_default()
    );
    if let Some(error) = &plan.error {
        out!("error: {error}");
    }
    let rows: Vec<[String; 7]> = actions
        .iter()
        .map(|action| {
            let note = action
                .error
                .clone()
                .or_else(|| action.details.as_ref().and_then(|d| d["skipped"].as_str()).map(str::to_owned))
                .or_else(|| action.details.as_ref().and_then(|d| d["seconds"].as_f64()).map(|s| format!("{s:.1} s")))
                .unwrap_or_default();
            [
                action.position.to_string(),
                action.server_name.clone(),
                action.server_id.clone(),
                action.source_host.clone().unwrap_or_default(),
                action.target_host.clone().unwrap_or_default(),
                action.state.to_string(),
                note,
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(&["#", "Server", "Id", "From", "To", "State", "Note"], &rows);
    }
    if let Some(ignored) = plan.summary.as_ref().and_then(|s| s["ignored"].as_array()).filter(|i| !i.is_empty()) {
        for item in ignored {
            out!("ignored: {} {} ({})", item["action_type"], item["uuid"], item["reason"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

async fn show_plan(db: &aos_db::DatabaseConnection, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    if args.json {
        out!("{}", serde_json::to_string_pretty(&plan_json(db, &args.id).await?)?);
    } else {
        print_plan(db, &args.id).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn apply(
    config: &aos_config::Config,
    db: &aos_db::DatabaseConnection,
    args: &ApplyArgs,
) -> anyhow::Result<ExitCode> {
    // Refuse an unknown or non-recommended plan before reaching OpenStack.
    let (plan, _) =
        aos_db::drs_find_plan(db, &args.id).await?.with_context(|| format!("no DRS action plan {}", args.id))?;
    if plan.state != aos_db::entity::DrsPlanState::Recommended {
        anyhow::bail!("action plan {} is {}: only a recommended plan can be applied", plan.id, plan.state);
    }
    let client = connect_openstack(config).await?;
    let task_id = aos_balance::drs::apply_plan(db, None, &args.id, &actor()).await?;
    if !args.json {
        out!("applying action plan {} as task {task_id} ...", args.id);
    }
    let queue = if db.get_database_backend() == aos_db::DbBackend::Sqlite {
        aos_jobs::JobQueue::sqlite(db).await?
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
    let identity = format!("drs-cli@{}:{}", host.trim(), std::process::id());
    let runner = aos_balance::drs::register_drs_tasks(
        aos_jobs::JobRunner::new(db.clone(), queue.clone(), identity, 1),
        db.clone(),
        client,
        settings,
    );
    let mut outcome = runner.process_one(task_id).await?;
    for _ in 0..3 {
        let aos_jobs::ProcessOutcome::RetryLater { error } = &outcome else { break };
        eprintln!("warning: task {task_id} will be run again: {error}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        outcome = runner.process_one(task_id).await?;
    }
    queue.close().await;
    if args.json {
        let plan = plan_json(db, &args.id).await?;
        out!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "task": task_id.to_string(), "outcome": format!("{outcome:?}"), "plan": plan })
            )?
        );
    } else {
        print_plan(db, &args.id).await?;
        out!("task {task_id}: {outcome:?}");
    }
    Ok(if outcome == aos_jobs::ProcessOutcome::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn cancel(db: &aos_db::DatabaseConnection, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let task = aos_balance::drs::cancel_plan(db, &args.id).await?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&plan_json(db, &args.id).await?)?);
    } else {
        match task {
            Some(task) => out!("action plan {} cancelled (task {task} cancelled)", args.id),
            None => out!("action plan {} cancelled", args.id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_json_values_or_strings_and_a_bad_one_is_named() {
        assert_eq!(parameter("maintenance_node=fake-1").unwrap(), ("maintenance_node".into(), json!("fake-1")));
        assert_eq!(parameter("threshold=0.5").unwrap(), ("threshold".into(), json!(0.5)));
        let error = parameter("=x").unwrap_err().to_string();
        assert!(error.contains("--parameter \"=x\""), "{error}");
    }
}
