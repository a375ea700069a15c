//! Thin entry point: arguments, then the shared daemon life in `aos_daemon::main_entry`.

use std::process::ExitCode;

use clap::Parser;

/// aos-cloud-manager listener daemon.
#[derive(Parser)]
#[command(name = "aos-cloud-manager-listener", version)]
struct Args {
    #[command(flatten)]
    common: aos_daemon::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    aos_daemon::main_entry(aos_listener::ROLE, &args.common, aos_listener::logfile, aos_listener::run)
}
