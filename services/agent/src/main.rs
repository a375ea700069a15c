//! Thin entry point: arguments, then the shared daemon life in `aos_daemon::main_entry`.

use std::process::ExitCode;

use clap::Parser;

/// aos-cloud-manager agent daemon.
#[derive(Parser)]
#[command(name = "aos-cloud-manager-agent", version)]
struct Args {
    #[command(flatten)]
    common: aos_daemon::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    aos_daemon::main_entry(aos_agent::ROLE, &args.common, aos_agent::logfile, aos_agent::run)
}
