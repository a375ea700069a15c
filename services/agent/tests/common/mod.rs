//! Shared by the agent's integration tests: a RabbitMQ virtual host of the test's own on the
//! real broker, node users with exactly the permissions of the trust model
//! (`aos_agent::trust`), and in-process node agents.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use aos_agent::node::Answering;
use aos_agent::{NodeCounters, NodeSettings, RequestSettings};
use aos_daemon::{CheckState, Readiness};
use tokio_util::sync::CancellationToken;

const NODE_PASSWORD: &str = "node-secret";

async fn rabbitmqctl(arguments: &[String]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(arguments)
        .output()
        .await
        .context("cannot run rabbitmqctl (the tests need the local RabbitMQ and root)")?;
    if !output.status.success() {
        bail!("rabbitmqctl {arguments:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// A vhost deleted (with its node users) when dropped.
pub struct TestVhost {
    pub name: String,
    pub tag: String,
    users: Vec<String>,
}

impl TestVhost {
    pub async fn create() -> anyhow::Result<Self> {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let name = format!("aos-agent-test-{tag}");
        rabbitmqctl(&["add_vhost".into(), name.clone()]).await?;
        rabbitmqctl(&[
            "set_permissions".into(),
            "-p".into(),
            name.clone(),
            "guest".into(),
            ".*".into(),
            ".*".into(),
            ".*".into(),
        ])
        .await?;
        Ok(Self { name, tag, users: Vec::new() })
    }

    /// The controller's URI (guest, all permissions on the vhost).
    pub fn controller_uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// Creates node users `aos-agent-<node>` (concurrently) with the trust model's permissions.
    pub async fn add_nodes(&mut self, nodes: &[&str]) -> anyhow::Result<()> {
        let setups = nodes.iter().map(|node| {
            let user = format!("aos-agent-{node}");
            let vhost = self.name.clone();
            let node = node.to_string();
            async move {
                rabbitmqctl(&["add_user".into(), user.clone(), NODE_PASSWORD.into()]).await?;
                for arguments in aos_agent::trust::node_user_permissions(&vhost, &user, &node) {
                    rabbitmqctl(&arguments).await?;
                }
                anyhow::Ok(user)
            }
        });
        for user in futures::future::join_all(setups).await {
            self.users.push(user?);
        }
        Ok(())
    }

    /// Node `node`'s URI (its own user).
    pub fn node_uri(&self, node: &str) -> String {
        format!("amqp://aos-agent-{node}:{NODE_PASSWORD}@127.0.0.1:5672/{}", self.name)
    }

    /// `rabbit://` form for a config file.
    pub fn node_transport_url(&self, node: &str) -> String {
        format!("rabbit://aos-agent-{node}:{NODE_PASSWORD}@127.0.0.1:5672/{}", self.name)
    }

    pub fn controller_transport_url(&self) -> String {
        format!("rabbit://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    pub fn node_settings(&self, node: &str, answering: Answering, interval: Duration) -> NodeSettings {
        NodeSettings {
            node: node.to_owned(),
            amqp_uri: self.node_uri(node),
            user: format!("aos-agent-{node}"),
            controller_user: "guest".into(),
            heartbeat_interval: interval,
            storage_paths: Vec::new(),
            answering,
        }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let mut commands = vec![vec!["delete_vhost".to_owned(), self.name.clone()]];
        commands.extend(self.users.iter().map(|user| vec!["delete_user".to_owned(), user.clone()]));
        for arguments in commands {
            let _ = std::process::Command::new("rabbitmqctl").args(&arguments).output();
        }
    }
}

/// Request timing for the tests: 1 s to confirm, 2 s to respond, 2 retries, 0.1 s backoff.
pub fn request_settings() -> RequestSettings {
    RequestSettings {
        confirm_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(2),
        retries: 2,
        backoff_factor: 0.1,
        node_user_prefix: "aos-agent-".into(),
    }
}

/// A node agent running in this process.
pub struct RunningNode {
    pub readiness: Readiness,
    pub counters: Arc<NodeCounters>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    pub fn start(settings: NodeSettings) -> Self {
        let readiness = Readiness::new("agent");
        let counters = Arc::new(NodeCounters::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(aos_agent::run_node(settings, readiness.clone(), counters.clone(), stop.clone()));
        Self { readiness, counters, stop, task }
    }

    /// Waits until the node is connected with its request queue declared.
    pub async fn connected(&self) -> anyhow::Result<()> {
        aos_testkit::wait_until(Duration::from_secs(30), "the node agent to connect", || async {
            Ok(matches!(self.readiness.snapshot().get("broker"), Some(CheckState::Ok)).then_some(()))
        })
        .await
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// The agent binary of this package.
pub const BINARY: &str = env!("CARGO_BIN_EXE_aos-cloud-manager-agent");

/// Starts the controller agent process on `database` and `vhost` (as guest), `[agent]
/// enabled`, with `heartbeat_stale_after` seconds.
pub fn spawn_controller(
    scratch: &aos_testkit::Scratch,
    database: &aos_testkit::testing::TestDatabase,
    vhost: &TestVhost,
    stale_after_seconds: u64,
) -> anyhow::Result<aos_testkit::DaemonProcess> {
    let base = scratch.write_config(&aos_testkit::test_config(database, "")?)?;
    let agent_conf = scratch.path().join("agent.conf");
    std::fs::write(
        &agent_conf,
        format!(
            "[DEFAULT]\ntransport_url = {}\n\n[agent]\nenabled = True\nheartbeat_stale_after = {stale_after_seconds}\n",
            vhost.controller_transport_url()
        ),
    )?;
    aos_testkit::DaemonProcess::spawn_with_configs(BINARY, &[&base, &agent_conf], scratch.path().join("controller.log"))
}

/// Starts `aos-cloud-manager-agent --role node` for `node` as its own broker user; its
/// configuration has no database at all.
pub fn spawn_node(
    scratch: &aos_testkit::Scratch,
    vhost: &TestVhost,
    node: &str,
    interval_seconds: u64,
    storage: Option<&std::path::Path>,
) -> anyhow::Result<tokio::process::Child> {
    let node_conf = scratch.path().join(format!("node-{node}.conf"));
    let storages = storage.map(|path| format!("storage_paths = {}\n", path.display())).unwrap_or_default();
    std::fs::write(
        &node_conf,
        format!(
            "[DEFAULT]\nhost = {node}\ntransport_url = {}\nshutdown_timeout = 5\n\n[agent]\nstatus_port = 0\n\
             heartbeat_interval = {interval_seconds}\ncontroller_user = guest\n{storages}",
            vhost.node_transport_url(node),
        ),
    )?;
    let log = std::fs::File::create(scratch.path().join(format!("node-{node}.log")))?;
    Ok(tokio::process::Command::new(BINARY)
        .args(["--role", "node", "--no-default-config-files", "--config-file"])
        .arg(&node_conf)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}
