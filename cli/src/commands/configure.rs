//! `configure` (the reference's `openstack aos configure -n cloud_manager`): writes the example
//! configuration files where missing, then checks the installation and prints one line per
//! check. Exit code 0 only when every check passed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aos_config::ExampleFile;
use aos_daemon::CommonArgs;

#[derive(clap::Args)]
pub struct ConfigureArgs {
    /// Module name (only `cloud_manager`), as in the reference tool.
    #[arg(short = 'n', long = "name", default_value = super::db::MODULE_NAME)]
    name: String,
    /// Where the example files go.
    #[arg(long = "etc-dir", default_value = "/etc/aos")]
    etc_dir: PathBuf,
}

/// Outcome of one check, printed as `[ OK ]` / `[FAIL]` lines.
struct Report {
    failures: usize,
}

impl Report {
    fn record(&mut self, check: &str, outcome: Result<String, String>) {
        match outcome {
            Ok(detail) => out!("[ OK ] {check}: {detail}"),
            Err(detail) => {
                self.failures += 1;
                out!("[FAIL] {check}: {detail}");
            }
        }
    }
}

pub fn run(common: &CommonArgs, args: ConfigureArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.name == super::db::MODULE_NAME, "unknown module {:?}", args.name);
    let mut report = Report { failures: 0 };
    for (file, name) in
        [(ExampleFile::AosConf, "aos.conf.example"), (ExampleFile::CloudManagerConf, "cloud_manager.conf.example")]
    {
        let path = args.etc_dir.join(name);
        report.record(&format!("example {}", path.display()), write_example_if_missing(&path, file));
    }
    let loaded = match common.load() {
        Ok(loaded) => {
            let detail = format!("{} file(s) read, {} warning(s)", loaded.files_read().len(), loaded.warnings.len());
            for warning in &loaded.warnings {
                out!("       warning: {warning}");
            }
            report.record("configuration", Ok(detail));
            loaded
        }
        Err(error) => {
            report.record("configuration", Err(format!("{error:#}")));
            return Ok(ExitCode::FAILURE);
        }
    };
    let config = loaded.config;
    for directory in log_directories(&config) {
        report.record(&format!("log directory {}", directory.display()), check_writable(&directory));
    }
    let runtime = super::runtime()?;
    report.record("database", runtime.block_on(check_database(&config)));
    report.record("message broker", runtime.block_on(check_broker(&config)));
    if report.failures == 0 {
        out!("configure: all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        out!("configure: {} check(s) failed", report.failures);
        Ok(ExitCode::FAILURE)
    }
}

fn write_example_if_missing(path: &Path, file: ExampleFile) -> Result<String, String> {
    if path.exists() {
        return Ok("present, left unchanged".to_owned());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    std::fs::write(path, aos_config::render_example(file)).map_err(|error| format!("cannot write: {error}"))?;
    Ok("written".to_owned())
}

/// Every directory a daemon will write its log into.
fn log_directories(config: &aos_config::Config) -> Vec<PathBuf> {
    let logfiles = [
        config.api.logfile.as_deref(),
        config.agent.logfile.as_deref(),
        config.listener.logfile.as_deref(),
        config.beat.logfile.as_deref(),
        config.worker.logfile.as_deref(),
        config.default.log_file.as_deref(),
    ];
    let mut directories: Vec<PathBuf> = logfiles
        .into_iter()
        .flatten()
        .filter_map(|file| {
            aos_daemon::logging::log_destination(Some(file), None, config.default.log_dir.as_deref())
                .and_then(|path| path.parent().map(Path::to_path_buf))
        })
        .collect();
    if let Some(dir) = &config.default.log_dir {
        directories.push(dir.clone());
    }
    directories.sort();
    directories.dedup();
    directories
}

fn check_writable(directory: &Path) -> Result<String, String> {
    let probe = directory.join(format!(".aos-configure-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(|error| format!("not writable: {error}"))?;
    let _ = std::fs::remove_file(&probe);
    Ok("writable".to_owned())
}

async fn check_database(config: &aos_config::Config) -> Result<String, String> {
    let db = super::connect(config).await.map_err(|error| format!("{error:#}"))?;
    let status = aos_db::schema_status(&db).await.map_err(|error| error.to_string())?;
    match status {
        aos_db::SchemaStatus::Current => {
            Ok(format!("reachable, schema current (version {})", aos_db::latest_version()))
        }
        aos_db::SchemaStatus::Behind { current, latest } => {
            Err(format!("reachable, schema at {current} of {latest}: run `aos-cloud-manager db migrate`"))
        }
        aos_db::SchemaStatus::Ahead { current, latest } => {
            Err(format!("reachable, schema at {current} is newer than this build ({latest})"))
        }
    }
}

async fn check_broker(config: &aos_config::Config) -> Result<String, String> {
    let uri = config.default.transport_url.to_amqp_uri();
    let connection = aos_bus::connect(&uri, "aos-cloud-manager-configure").await.map_err(|error| error.to_string())?;
    let _ = connection.close(200, "configure check done".into()).await;
    Ok(format!("reachable ({})", config.default.transport_url.masked()))
}
