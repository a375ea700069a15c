//! Logging: tracing to the service's log file through `tracing-appender` (non-blocking writer,
//! no rotation of our own: logrotate with `copytruncate` owns rotation, as in the reference
//! product), or to stderr when no file is configured (journald picks it up under systemd).
//!
//! Which file: the service's own `logfile` option when set, else `[DEFAULT] log_file`
//! (relative names resolved in `[DEFAULT] log_dir`), else stderr. Level: `info`, `debug` with
//! `[DEFAULT] debug = True`; `RUST_LOG` overrides both for troubleshooting.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Keeps the background log writer alive; drop it last so buffered lines are flushed.
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// Where a service's log goes, resolved from the configuration.
pub fn log_destination(
    service_logfile: Option<&Path>,
    default_log_file: Option<&Path>,
    default_log_dir: Option<&Path>,
) -> Option<PathBuf> {
    let chosen = service_logfile.or(default_log_file)?;
    if chosen.is_absolute() {
        return Some(chosen.to_path_buf());
    }
    Some(match default_log_dir {
        Some(dir) => dir.join(chosen),
        None => chosen.to_path_buf(),
    })
}

/// Installs the global subscriber. Call once, at the top of `main`.
pub fn init_logging(destination: Option<&Path>, debug: bool) -> anyhow::Result<LogGuard> {
    let default_level = if debug { "debug" } else { "info" };
    // sqlx and lapin are chatty at info; keep them at warn unless RUST_LOG asks otherwise.
    let directives = format!("{default_level},sqlx=warn,sea_orm=warn,lapin=warn,amq_protocol=warn");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    match destination {
        None => {
            use std::io::IsTerminal as _;
            builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init();
            Ok(LogGuard { _worker: None })
        }
        Some(path) => {
            let directory = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let file_name =
                path.file_name().with_context(|| format!("log file path {} has no file name", path.display()))?;
            std::fs::create_dir_all(directory)
                .with_context(|| format!("cannot create log directory {}", directory.display()))?;
            // Probe writability now so a bad path fails start-up with its name, not silently later.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let appender = tracing_appender::rolling::never(directory, file_name);
            let (writer, guard) = tracing_appender::non_blocking(appender);
            builder.with_ansi(false).with_writer(writer).init();
            Ok(LogGuard { _worker: Some(guard) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_logfile_wins_and_relative_names_go_to_log_dir() {
        let dir = Path::new("/var/log/aos/cloud-manager");
        assert_eq!(
            log_destination(Some(Path::new("beat.log")), Some(Path::new("all.log")), Some(dir)),
            Some(dir.join("beat.log"))
        );
        assert_eq!(
            log_destination(None, Some(Path::new("/tmp/all.log")), Some(dir)),
            Some(PathBuf::from("/tmp/all.log"))
        );
        assert_eq!(log_destination(None, None, Some(dir)), None, "no file configured means stderr");
    }
}
