//! A RabbitMQ node of a test's own, for tests that stop or restart the broker: the machine's
//! shared broker (127.0.0.1:5672) serves every other test running in parallel and the test
//! cloud, so it is never restarted by a test.
//!
//! The node is `rabbitmq-server` (Debian's `/usr/lib/rabbitmq/bin`, run as the current user,
//! not through the `/usr/sbin` wrapper that switches to the `rabbitmq` user) with everything
//! of its own: node name `aos-scratch-<pid>-<hex>@localhost`, AMQP and distribution ports
//! picked free on 127.0.0.1, data (`RABBITMQ_MNESIA_BASE`), logs, configuration, an empty
//! plugin list (no management listener to collide with the shared broker's) and an Erlang
//! cookie in a temporary directory (`HOME`). Everything listens on loopback only
//! (`RABBITMQ_NODE_IP_ADDRESS`, `ERL_EPMD_ADDRESS`, `inet_dist_use_interface`), as
//! `../shared/openstack-env/up.sh` starts the shared one. It registers with the machine's
//! epmd (started by Erlang if absent, and left running: epmd is shared).
//!
//! [`ScratchBroker::stop`] stops the node gracefully (`rabbitmqctl -n NODE stop`),
//! [`ScratchBroker::kill`] kills it (SIGKILL to its process group), and
//! [`ScratchBroker::start_again`] starts it again on the same data and ports: durable queues
//! and the persistent messages in them survive. Dropping it kills the node and deletes its
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::free_port;

/// Where Debian installs RabbitMQ's own scripts (the `/usr/sbin` ones are `su` wrappers).
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";
/// Bound on a node start (a cold boot takes ~5–10 s on the 2-core test machine).
const START_LIMIT: Duration = Duration::from_secs(120);
/// Bound on a graceful stop before the node is killed.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// A RabbitMQ node that exists for one test.
pub struct ScratchBroker {
    node: String,
    port: u16,
    dist_port: u16,
    directory: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl ScratchBroker {
    /// Creates the node's directory and starts it; returns once it accepts AMQP connections.
    pub async fn start() -> anyhow::Result<Self> {
        let directory = tempfile::Builder::new().prefix("aos-scratch-broker-").tempdir()?;
        let suffix = format!("{:08x}", rand_u32());
        let broker = ScratchBroker {
            node: format!("aos-scratch-{}-{suffix}@localhost", std::process::id()),
            port: free_port()?,
            dist_port: free_port()?,
            directory,
            child: None,
            starts: 0,
        };
        broker.write_files()?;
        let mut broker = broker;
        broker.start_again().await?;
        Ok(broker)
    }

    /// The node name, for `rabbitmqctl -n`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The AMQP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2F` (guest may log in over loopback).
    pub fn amqp_uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2F", self.port)
    }

    /// The same broker as an oslo-style transport URL (`[listener] nova_transport_url`).
    pub fn transport_url(&self) -> String {
        format!("rabbit://guest:guest@127.0.0.1:{}/", self.port)
    }

    /// Whether the node process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Starts the node (again, on the same data and ports) and waits until it accepts AMQP
    /// connections and `rabbitmqctl await_startup` succeeds.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("the scratch broker {} is already running", self.node);
        }
        // A killed node's process may still be exiting, its listening socket still accepting:
        // start only once the port is closed, so that "port open" below means the new node.
        self.wait_port_closed().await?;
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("server.out"))?;
        let mut command = Command::new(Path::new(RABBITMQ_BIN).join("rabbitmq-server"));
        self.environment(&mut command);
        command
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_PID_FILE", self.path("rabbitmq.pid"))
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.path("enabled_plugins"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .current_dir(self.directory.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: the shell script, erl and erl's helpers are killed together.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().with_context(|| format!("cannot start {RABBITMQ_BIN}/rabbitmq-server"))?;
        self.child = Some(child);

        let started = Instant::now();
        loop {
            if !self.is_running() {
                bail!("the scratch broker {} exited during start-up:\n{}", self.node, self.log_tail());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                break;
            }
            if started.elapsed() > START_LIMIT {
                self.kill_now();
                bail!(
                    "the scratch broker {} did not open port {} within {START_LIMIT:?}:\n{}",
                    self.node,
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let remaining = START_LIMIT.saturating_sub(started.elapsed()).as_secs().max(10);
        if let Err(error) = self.ctl(&["await_startup", "--timeout", &remaining.to_string()]).await {
            bail!("start {} of the scratch broker failed: {error:#}\n{}", self.starts, self.log_tail());
        }
        Ok(())
    }

    /// Stops the node gracefully (`rabbitmqctl -n NODE stop`: connections are closed, the
    /// process exits) and waits until its port is closed; kills it if it does not stop in time.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        if let Err(error) = self.ctl(&["stop"]).await {
            eprintln!("rabbitmqctl stop failed ({error:#}); killing the scratch broker");
            self.kill_now();
        }
        let started = Instant::now();
        while self.is_running() {
            if started.elapsed() > STOP_LIMIT {
                eprintln!("the scratch broker did not stop within {STOP_LIMIT:?}; killing it");
                self.kill_now();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.reap();
        self.wait_port_closed().await
    }

    /// Kills the node at once (SIGKILL to its process group), as a crash would; returns once
    /// its port is closed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.kill_now();
        self.wait_port_closed().await
    }

    async fn wait_port_closed(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            if started.elapsed() > STOP_LIMIT {
                bail!("port {} of the stopped scratch broker is still open after {STOP_LIMIT:?}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The last lines of the node's own log and its console output, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        let node_log = self.path("log").join(format!("{}.log", self.node));
        for path in [node_log, self.path("server.out")] {
            if let Ok(content) = std::fs::read_to_string(&path) {
                let lines: Vec<&str> = content.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                text.push_str(&format!("--- {} ---\n{tail}\n", path.display()));
            }
        }
        text
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    fn write_files(&self) -> anyhow::Result<()> {
        // Our own (empty) environment file and configuration, instead of /etc/rabbitmq's,
        // which name the shared node and its port.
        std::fs::write(self.path("rabbitmq-env.conf"), "")?;
        std::fs::write(
            self.path("rabbitmq.conf"),
            "# aos-testkit scratch broker: listeners come from RABBITMQ_NODE_IP_ADDRESS/PORT.\n\
             loopback_users.guest = true\n",
        )?;
        std::fs::write(self.path("enabled_plugins"), "[].\n")?;
        std::fs::create_dir_all(self.path("home"))?;
        Ok(())
    }

    /// What the server and `rabbitmqctl` share: the node name, the environment file, the
    /// Erlang cookie (`HOME`), epmd on loopback.
    fn environment(&self, command: &mut Command) {
        command
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONF_ENV_FILE", self.path("rabbitmq-env.conf"))
            .env("HOME", self.path("home"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env_remove("ERL_FLAGS");
    }

    /// Runs `rabbitmqctl -n NODE <args>` on a blocking thread.
    async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(Path::new(RABBITMQ_BIN).join("rabbitmqctl"));
        self.environment(&mut command);
        command.arg("-n").arg(&self.node).args(args).stdin(Stdio::null());
        let description = format!("rabbitmqctl -n {} {}", self.node, args.join(" "));
        let output = tokio::task::spawn_blocking(move || command.output()).await??;
        if !output.status.success() {
            bail!(
                "{description} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn kill_now(&mut self) {
        if let Some(child) = &self.child
            && let Ok(pid) = i32::try_from(child.id())
        {
            // The group we created for it (its pid): nothing else is in it.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        self.reap();
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for ScratchBroker {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A little randomness for the node name (two tests of one process start nodes apart).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    hasher.finish() as u32
}
