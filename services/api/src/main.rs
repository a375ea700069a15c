//! Thin entry point: arguments, then the shared daemon life in `aos_daemon::main_entry`.

use std::process::ExitCode;

use clap::Parser;

/// aos-cloud-manager api daemon.
#[derive(Parser)]
#[command(name = "aos-cloud-manager-api", version)]
struct Args {
    #[command(flatten)]
    common: aos_daemon::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Read once more (main_entry reads and validates it first and reports its errors) for the
    // provenance `GET /v1/settings` shows.
    let settings = args.common.load().ok().map(|loaded| aos_api::EffectiveSettings::from_loaded(&loaded));
    aos_daemon::main_entry(aos_api::ROLE, &args.common, aos_api::logfile, move |context| {
        aos_api::run_with_settings(context, settings)
    })
}
