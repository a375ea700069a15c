//! Thin entry point: arguments, then the shared daemon life in `aos_daemon::main_entry`.

use std::process::ExitCode;

use clap::Parser;

/// aos-cloud-manager beat daemon.
#[derive(Parser)]
#[command(name = "aos-cloud-manager-beat", version)]
struct Args {
    #[command(flatten)]
    common: aos_daemon::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    aos_daemon::main_entry(aos_beat::ROLE, &args.common, aos_beat::logfile, aos_beat::run)
}
