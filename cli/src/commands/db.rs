//! `db list` and `db migrate`, with the reference tool's output (`N | Module name | Status |
//! Result`, results such as `3 -> 7` or `No changes`). `-n cloud_manager` is accepted so the
//! reference's command lines work unchanged.

use std::process::ExitCode;

use aos_daemon::CommonArgs;

use super::config::print_table;

/// The only module this tool manages; the reference tool manages several by name.
pub const MODULE_NAME: &str = "cloud_manager";

#[derive(clap::Subcommand)]
pub enum DbCommand {
    /// Print the current schema version and every known migration (applied or not).
    List(ModuleArg),
    /// Move the schema up or down to a migration (the latest by default).
    Migrate(MigrateArgs),
}

#[derive(clap::Args)]
pub struct ModuleArg {
    /// Module name (only `cloud_manager`), as in `openstack aos db list -n cloud_manager`.
    #[arg(short = 'n', long = "name", default_value = MODULE_NAME)]
    name: String,
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    module: ModuleArg,
    /// Target migration number (0 = empty schema); the latest when omitted.
    #[arg(long = "migration", value_name = "N")]
    migration: Option<u32>,
    /// Also list every migration applied or reverted.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

fn check_module(module: &ModuleArg) -> anyhow::Result<()> {
    anyhow::ensure!(
        module.name == MODULE_NAME,
        "unknown module {:?}: this tool manages only {MODULE_NAME:?}",
        module.name
    );
    Ok(())
}

pub fn run(common: &CommonArgs, command: DbCommand) -> anyhow::Result<ExitCode> {
    let loaded = common.load()?;
    let config = loaded.config;
    super::runtime()?.block_on(async move {
        let db = super::connect(&config).await?;
        match command {
            DbCommand::List(module) => {
                check_module(&module)?;
                list(&db).await
            }
            DbCommand::Migrate(args) => {
                check_module(&args.module)?;
                migrate(&db, args).await
            }
        }
    })
}

async fn list(db: &aos_db::DatabaseConnection) -> anyhow::Result<ExitCode> {
    let migrations = aos_db::migration_status(db).await?;
    let current = aos_db::current_version(db).await?;
    out!("Module name: {MODULE_NAME}");
    out!("Current version: {current} (latest known: {})", aos_db::latest_version());
    let rows: Vec<[String; 3]> = migrations
        .iter()
        .map(|migration| {
            let status = if migration.applied { "Applied" } else { "Not applied" };
            [migration.number.to_string(), migration.name.clone(), status.to_owned()]
        })
        .collect();
    print_table(&["N", "Migration", "Status"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn migrate(db: &aos_db::DatabaseConnection, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let before = aos_db::migration_status(db).await?;
    let outcome = aos_db::migrate_to(db, args.migration).await;
    let (status, result, code) = match &outcome {
        Ok(outcome) if outcome.from == outcome.to => ("Success".to_owned(), "No changes".to_owned(), ExitCode::SUCCESS),
        Ok(outcome) => ("Success".to_owned(), format!("{} -> {}", outcome.from, outcome.to), ExitCode::SUCCESS),
        Err(error) => ("Failed".to_owned(), error.to_string(), ExitCode::FAILURE),
    };
    print_table(&["N", "Module name", "Status", "Result"], &[["1".to_owned(), MODULE_NAME.to_owned(), status, result]]);
    if args.verbose {
        let after = aos_db::migration_status(db).await?;
        for (old, new) in before.iter().zip(&after) {
            match (old.applied, new.applied) {
                (false, true) => out!("applied  {:>3} {}", new.number, new.name),
                (true, false) => out!("reverted {:>3} {}", new.number, new.name),
                _ => {}
            }
        }
    }
    Ok(code)
}
