//! Helpers for the daemons' integration tests: a fresh migrated database written into a config
//! file, a daemon binary spawned on it, signals, bounded waiting, and a RabbitMQ node of a
//! test's own that it may stop and restart ([`ScratchBroker`]). Dev-dependency only.
//!
//! Waiting is always bounded (`wait_until`) and never used as an assertion on speed: a bound is
//! a liveness limit far above the expected time, so a slow CI machine does not fail a test.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aos_db::testing::TestDatabase;

mod scratch_broker;

pub use aos_db::testing;
pub use scratch_broker::ScratchBroker;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The `[database] url` a config file should carry for a test database, in the forms operators
/// write: SQLAlchemy's `mysql+pymysql://…?charset=utf8` and `sqlite:////abs/path`.
pub fn config_database_url(database: &TestDatabase) -> String {
    let url = database.url();
    if let Some(rest) = url.strip_prefix("mysql://") {
        return format!("mysql+pymysql://{rest}?charset=utf8");
    }
    let path = url.trim_start_matches("sqlite://");
    let path = path.split('?').next().unwrap_or(path);
    format!("sqlite:///{path}")
}

/// A scratch directory holding a config file and the daemons' logs.
pub struct Scratch {
    directory: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self { directory: tempfile::Builder::new().prefix("aos-it-").tempdir()? })
    }

    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// Writes `cloud_manager.conf` with `ini` and returns its path.
    pub fn write_config(&self, ini: &str) -> anyhow::Result<PathBuf> {
        let path = self.directory.path().join("cloud_manager.conf");
        std::fs::write(&path, ini)?;
        Ok(path)
    }
}

/// A config for a daemon under test: the database, fast leases, a short shutdown deadline, no
/// status ports (tests run several daemons side by side), plus `extra` sections.
pub fn test_config(database: &TestDatabase, extra: &str) -> anyhow::Result<String> {
    Ok(format!(
        "[DEFAULT]\nshutdown_timeout = 10\n\n[database]\nurl = {url}\n\n[coordination]\nlease_ttl = 4\nlease_renew_interval = 1\n\n\
         [api]\nhost = 127.0.0.1\nport = {api_port}\n\n[listener]\nstatus_port = 0\n\n[beat]\nstatus_port = 0\n\n\
         [worker]\nstatus_port = 0\nqueue_prefix = {prefix}\n\n[agent]\nstatus_port = 0\n\n{extra}\n",
        url = config_database_url(database),
        api_port = free_port()?,
        prefix = queue_prefix(database),
    ))
}

/// The job-queue prefix of a test: unique per test database, so tests sharing the broker never
/// consume each other's jobs.
pub fn queue_prefix(database: &TestDatabase) -> String {
    let url = database.url();
    let name = url.split('?').next().unwrap_or(url).trim_end_matches('/').rsplit('/').next().unwrap_or("db");
    format!("aos-test-{}", name.replace('.', "-"))
}

/// The job queue a daemon of this test uses (SQLite in the database file, or RabbitMQ on the
/// default broker with the test's prefix).
pub async fn test_job_queue(
    database: &TestDatabase,
    db: &aos_db::DatabaseConnection,
) -> anyhow::Result<aos_jobs::JobQueue> {
    if database.url().starts_with("sqlite:") {
        Ok(aos_jobs::JobQueue::sqlite(db).await?)
    } else {
        Ok(aos_jobs::JobQueue::connect_amqp(TEST_AMQP_URI, &queue_prefix(database)).await?)
    }
}

/// The broker of the tests: RabbitMQ on 127.0.0.1, guest/guest, vhost `/` (the default
/// `[DEFAULT] transport_url`).
pub const TEST_AMQP_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2F";

/// Deletes the test's RabbitMQ queues (left by workers and beats), if it used RabbitMQ.
pub async fn delete_test_queues(database: &TestDatabase) {
    if database.url().starts_with("sqlite:") {
        return;
    }
    match aos_jobs::JobQueue::connect_amqp(TEST_AMQP_URI, &queue_prefix(database)).await {
        Ok(queue) => {
            if let Err(error) = queue.delete().await {
                eprintln!("cannot delete the test queues: {error}");
            }
            queue.close().await;
        }
        Err(error) => eprintln!("cannot reach the broker to delete the test queues: {error}"),
    }
}

/// A daemon process under test; killed when dropped if still running.
pub struct DaemonProcess {
    child: tokio::process::Child,
    pid: u32,
    log_path: PathBuf,
}

impl DaemonProcess {
    /// Starts `binary --no-default-config-files --config-file CONFIG`, logging to `log_path`.
    pub fn spawn(binary: &str, config: &Path, log_path: PathBuf) -> anyhow::Result<Self> {
        Self::spawn_with_configs(binary, &[config], log_path)
    }

    /// Like [`DaemonProcess::spawn`] with several `--config-file`s (later files win).
    pub fn spawn_with_configs(binary: &str, configs: &[&Path], log_path: PathBuf) -> anyhow::Result<Self> {
        let log = std::fs::File::create(&log_path)?;
        let mut command = tokio::process::Command::new(binary);
        command.arg("--no-default-config-files");
        for config in configs {
            command.arg("--config-file").arg(config);
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {binary}"))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Self { child, pid, log_path })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        nix::sys::signal::kill(pid, signal).with_context(|| format!("cannot send {signal} to {}", self.pid))
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGTERM)
    }

    pub fn sigkill(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGKILL)
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!("pid {} still running after {limit:?}; log:\n{}", self.pid, self.log()),
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `limit`; the error names
/// `what` was awaited.
pub async fn wait_until<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if started.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The scenario every daemon passes: started on a fresh migrated database it registers its
/// service instance; SIGTERM makes it exit 0 within its shutdown deadline and deregister.
pub async fn sigterm_scenario(binary: &str, role: &str, database: &TestDatabase) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let scratch = Scratch::new()?;
    let config = scratch.write_config(&test_config(database, "")?)?;
    let mut daemon = DaemonProcess::spawn(binary, &config, scratch.path().join(format!("{role}.log")))?;
    let pid = i64::from(daemon.pid());
    wait_until(Duration::from_secs(60), "the daemon to register its service instance", || async {
        let instances = aos_db::list_service_instances(&db).await?;
        Ok(instances.iter().any(|instance| instance.pid == pid && instance.role == role).then_some(()))
    })
    .await
    .with_context(|| daemon.log())?;
    daemon.sigterm()?;
    // The configured deadline is 10 s; allow generous slack for a loaded CI machine.
    let status = daemon.wait_exit(Duration::from_secs(30)).await?;
    anyhow::ensure!(status.success(), "{role} exited with {status} after SIGTERM; log:\n{}", daemon.log());
    let instances = aos_db::list_service_instances(&db).await?;
    anyhow::ensure!(!instances.iter().any(|instance| instance.pid == pid), "{role} did not deregister on SIGTERM");
    db.close().await?;
    delete_test_queues(database).await;
    Ok(())
}

/// A daemon started on a database whose schema is behind refuses to start, names the command
/// that fixes it, and exits non-zero.
pub async fn schema_behind_scenario(binary: &str, database: &TestDatabase) -> anyhow::Result<()> {
    let db = database.connect().await?;
    aos_db::migrate_to(&db, Some(1)).await?;
    let scratch = Scratch::new()?;
    let config = scratch.write_config(&test_config(database, "")?)?;
    let mut daemon = DaemonProcess::spawn(binary, &config, scratch.path().join("daemon.log"))?;
    let status = daemon.wait_exit(Duration::from_secs(60)).await?;
    anyhow::ensure!(!status.success(), "daemon started on a schema that is behind");
    let log = daemon.log();
    anyhow::ensure!(log.contains("aos-cloud-manager db migrate"), "the refusal does not name the fix:\n{log}");
    db.close().await?;
    Ok(())
}

/// `GET /metrics` on a daemon started on a fresh database answers Prometheus text with the
/// database figures (nodes by state, tasks, lease holders) and its role. The port is the
/// daemon's `[<role>] status_port` (`[api] port` for the API).
pub async fn metrics_scenario(binary: &str, role: &str, database: &TestDatabase) -> anyhow::Result<()> {
    let db = database.connect_migrated().await?;
    let scratch = Scratch::new()?;
    let port = free_port()?;
    let key = if role == "api" { "port" } else { "status_port" };
    let config = scratch.write_config(&test_config(database, &format!("[{role}]\n{key} = {port}\n"))?)?;
    let mut daemon = DaemonProcess::spawn(binary, &config, scratch.path().join(format!("{role}.log")))?;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let body = wait_until(Duration::from_secs(60), "/metrics to answer with the database figures", || async {
        Ok(match http_get(address, "/metrics").await {
            Ok((200, body)) if body.lines().any(|line| line == "aos_database_up 1") => Some(body),
            _ => None,
        })
    })
    .await
    .with_context(|| daemon.log())?;
    let role_line = format!("aos_up{{role=\"{role}\"}} 1");
    for expected in [
        role_line.as_str(),
        "# TYPE aos_nodes gauge",
        "aos_nodes{state=\"up\"} 0",
        "aos_reserve_pool_members 0",
        "# TYPE aos_tasks gauge",
        "# TYPE aos_alarms_open gauge",
        "# TYPE aos_lease_holder gauge",
    ] {
        anyhow::ensure!(body.lines().any(|line| line == expected), "{expected:?} missing from /metrics:\n{body}");
    }
    daemon.sigterm()?;
    let status = daemon.wait_exit(Duration::from_secs(30)).await?;
    anyhow::ensure!(status.success(), "{role} exited with {status} after SIGTERM; log:\n{}", daemon.log());
    db.close().await?;
    delete_test_queues(database).await;
    Ok(())
}

/// A minimal HTTP/1.1 GET over loopback for tests (no client crate needed): returns the status
/// code and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The process-level tests every daemon passes, generated for one binary and role: SIGTERM
/// exits 0 and deregisters (SQLite and MariaDB), `/metrics` answers, and a schema that is
/// behind is refused.
#[macro_export]
macro_rules! daemon_lifecycle_tests {
    ($binary:expr, $role:expr) => {
        #[tokio::test]
        async fn sigterm_makes_the_daemon_exit_zero_and_deregister_on_sqlite() -> anyhow::Result<()> {
            let database = $crate::testing::TestDatabase::sqlite().await?;
            $crate::sigterm_scenario($binary, $role, &database).await
        }

        #[tokio::test]
        async fn sigterm_makes_the_daemon_exit_zero_and_deregister_on_mariadb() -> anyhow::Result<()> {
            let database = $crate::testing::TestDatabase::mysql().await?;
            let outcome = $crate::sigterm_scenario($binary, $role, &database).await;
            database.cleanup().await;
            outcome
        }

        #[tokio::test]
        async fn the_daemon_serves_prometheus_metrics() -> anyhow::Result<()> {
            let database = $crate::testing::TestDatabase::sqlite().await?;
            $crate::metrics_scenario($binary, $role, &database).await
        }

        #[tokio::test]
        async fn the_daemon_refuses_a_schema_that_is_behind() -> anyhow::Result<()> {
            let database = $crate::testing::TestDatabase::sqlite().await?;
            $crate::schema_behind_scenario($binary, &database).await
        }
    };
}
