//! Thin entry point: arguments, then the shared daemon life in `aos_daemon::main_entry`.

use std::process::ExitCode;

use clap::Parser;

/// aos-cloud-manager worker daemon.
#[derive(Parser)]
#[command(name = "aos-cloud-manager-worker", version)]
struct Args {
    #[command(flatten)]
    common: aos_daemon::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    aos_daemon::main_entry(aos_worker::ROLE, &args.common, aos_worker::logfile, aos_worker::run)
}
