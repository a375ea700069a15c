//! `aos-cloud-manager`: the admin CLI (configuration, schema migrations, the all-in-one
//! single-node mode; operator verbs are added by the issues that build what they drive).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that ends the process quietly when stdout is closed (`aos-cloud-manager config
/// show | head`) instead of panicking, as a Unix command-line tool should.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout_line(format_args!($($arg)*))
    };
}

mod commands;

fn write_stdout_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(line).and_then(|()| stdout.write_all(b"\n")) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {error}");
        std::process::exit(1);
    }
}

#[derive(Parser)]
#[command(
    name = "aos-cloud-manager",
    version,
    about = "Admin CLI of aos-cloud-manager (OpenStack compute HA, balancing, power)"
)]
struct Cli {
    #[command(flatten)]
    common: aos_daemon::CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Write the example configuration files where missing and check the installation.
    Configure(commands::configure::ConfigureArgs),
    /// Database schema: list migrations, migrate up or down.
    #[command(subcommand)]
    Db(commands::db::DbCommand),
    /// Nodes (hypervisors): list, show with history.
    #[command(subcommand)]
    Node(commands::node::NodeCommand),
    /// Power devices (BMCs, PDUs, SSH labs): create, list, show, delete, generate-key.
    #[command(subcommand)]
    PowerDevice(commands::power::PowerDeviceCommand),
    /// Power of a node (or a device): status, on, off, soft-off, reset, cycle, bootdev-pxe.
    #[command(subcommand)]
    Power(commands::power::PowerCommand),
    /// Tasks (recoveries, evacuations, ...) with their steps.
    #[command(subcommand)]
    Task(commands::operator::TaskCommand),
    /// Reserve (standby) hosts and the hosts they back.
    #[command(subcommand)]
    Reserve(commands::operator::ReserveCommand),
    /// Alarms (storm guard, fence failed, evacuation failed, node isolated, ...).
    #[command(subcommand)]
    Alarm(commands::operator::AlarmCommand),
    /// Events received from Nova.
    #[command(subcommand)]
    Event(commands::event::EventCommand),
    /// Node agents: facts, checks, state-file writes, heartbeats, broker users.
    #[command(subcommand)]
    Agent(commands::agent::AgentCommand),
    /// Availability storages (node state files): create, list, delete, bind, unbind, sync.
    #[command(subcommand)]
    Storage(commands::storage::StorageCommand),
    /// Keystone: register the API's service and endpoints in the catalogue.
    #[command(subcommand)]
    Keystone(commands::keystone::KeystoneCommand),
    /// Balancing of host aggregates by live migration: preview (dry run) or run.
    #[command(subcommand)]
    Balance(commands::balance::BalanceCommand),
    /// DRS: audits (recommendations of the planner or OpenStack Watcher) and action plans.
    #[command(subcommand)]
    Drs(commands::drs::DrsCommand),
    /// Run all five roles in one process on the embedded default (SQLite, no broker needed).
    AllInOne(commands::all_in_one::AllInOneArgs),
    /// The main job, shown live on a simulated cloud with the embedded database: a host dies,
    /// is confirmed down, fenced, forced down, and its servers evacuated by priority.
    Demo(commands::demo::DemoArgs),
}

fn main() -> ExitCode {
    aos_daemon::startup::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(command) => commands::config::run(&cli.common, command),
        Command::Configure(args) => commands::configure::run(&cli.common, args),
        Command::Db(command) => commands::db::run(&cli.common, command),
        Command::Node(command) => commands::node::run(&cli.common, command),
        Command::Task(command) => commands::operator::run_task(&cli.common, command),
        Command::Alarm(command) => commands::operator::run_alarm(&cli.common, command),
        Command::Reserve(command) => commands::operator::run_reserve(&cli.common, command),
        Command::PowerDevice(command) => commands::power::run_device(&cli.common, command),
        Command::Power(command) => commands::power::run_power(&cli.common, command),
        Command::Event(command) => commands::event::run(&cli.common, command),
        Command::Storage(command) => commands::storage::run(&cli.common, command),
        Command::Agent(command) => commands::agent::run(&cli.common, command),
        Command::Keystone(command) => commands::keystone::run(&cli.common, command),
        Command::Balance(command) => commands::balance::run(&cli.common, command),
        Command::Drs(command) => commands::drs::run(&cli.common, command),
        Command::AllInOne(args) => commands::all_in_one::run(&cli.common, args),
        Command::Demo(args) => commands::demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
