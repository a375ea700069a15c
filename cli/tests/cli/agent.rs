//! `node facts NAME` and `agent …`: the CLI asks a real node agent (running in this process as
//! its own RabbitMQ user on a vhost of the test's own) through the controller's request path.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{Backend, Fixture};

fn rabbitmqctl(arguments: &[String]) {
    let output = Command::new("rabbitmqctl").args(arguments).output().expect("run rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl {arguments:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Deletes the test's vhost and node user even when an assertion fails.
struct BrokerCleanup {
    vhost: String,
    user: String,
}

impl Drop for BrokerCleanup {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.vhost]).output();
        let _ = Command::new("rabbitmqctl").args(["delete_user", &self.user]).output();
    }
}

fn unique_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_facts_asks_the_nodes_agent_and_reports_a_silent_one() {
    let tag = unique_tag();
    let vhost = format!("aos-cli-agent-{tag}");
    let node = format!("cmp-{tag}");
    let user = format!("aos-agent-{node}");
    let _cleanup = BrokerCleanup { vhost: vhost.clone(), user: user.clone() };
    rabbitmqctl(&["add_vhost".into(), vhost.clone()]);
    rabbitmqctl(&[
        "set_permissions".into(),
        "-p".into(),
        vhost.clone(),
        "guest".into(),
        ".*".into(),
        ".*".into(),
        ".*".into(),
    ]);
    rabbitmqctl(&["add_user".into(), user.clone(), "pw".into()]);
    for arguments in aos_agent::trust::node_user_permissions(&vhost, &user, &node) {
        rabbitmqctl(&arguments);
    }
    let extra = format!(
        "[DEFAULT]\ntransport_url = rabbit://guest:guest@127.0.0.1:5672/{vhost}\n\n[agent]\n\
         agent_confirm_timeout = 1\nagent_response_timeout = 5\nrequest_retries = 1\nbackoff_factor = 0.1\n"
    );
    let fixture = Fixture::new(Backend::MySql, &extra).await;
    assert!(fixture.run(&["db", "migrate"]).succeeded());

    // The exchange is the controller side's: declare it before the node agent connects.
    let settings = aos_agent::RequestSettings {
        confirm_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        retries: 0,
        backoff_factor: 0.1,
        node_user_prefix: "aos-agent-".into(),
    };
    let uri = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    aos_agent::Requester::connect(&uri, "guest", settings).await.expect("declare the agent exchange").close().await;
    let readiness = aos_daemon::Readiness::new("agent");
    let stop = tokio_util::sync::CancellationToken::new();
    let node_settings = aos_agent::NodeSettings {
        node: node.clone(),
        amqp_uri: format!("amqp://{user}:pw@127.0.0.1:5672/{vhost}"),
        user: user.clone(),
        controller_user: "guest".into(),
        heartbeat_interval: Duration::from_secs(1),
        storage_paths: Vec::new(),
        answering: aos_agent::node::Answering::Normal,
    };
    let agent = tokio::spawn(aos_agent::run_node(
        node_settings,
        readiness.clone(),
        Arc::new(aos_agent::NodeCounters::default()),
        stop.clone(),
    ));
    aos_testkit::wait_until(Duration::from_secs(30), "the node agent to connect", || async {
        Ok(matches!(readiness.snapshot().get("broker"), Some(aos_daemon::CheckState::Ok)).then_some(()))
    })
    .await
    .expect("node agent connected");

    let config = fixture.config.clone();
    let facts_node = node.clone();
    let facts = tokio::task::spawn_blocking(move || crate::support::run_cli(&config, &["node", "facts", &facts_node]))
        .await
        .unwrap();
    assert!(facts.succeeded(), "{}", facts.report());
    let response: serde_json::Value = serde_json::from_str(&facts.stdout).expect("JSON facts");
    assert_eq!(response["outcome"], "facts", "{}", facts.report());
    assert_eq!(response["facts"]["host"], node.as_str(), "{}", facts.report());

    // A node without an agent: no confirm, sent 1 + request_retries times, exit 1.
    let config = fixture.config.clone();
    let silent =
        tokio::task::spawn_blocking(move || crate::support::run_cli(&config, &["node", "facts", "cmp-nobody"]))
            .await
            .unwrap();
    assert_eq!(silent.code, Some(1), "{}", silent.report());
    assert!(silent.stderr.contains("no confirm") && silent.stderr.contains("2 attempts"), "{}", silent.report());
    let invalid = fixture.run(&["node", "facts", "a/b"]);
    assert_eq!(invalid.code, Some(2), "{}", invalid.report());

    let commands = fixture.run(&["agent", "rabbitmq-commands", &node]);
    assert!(commands.succeeded(), "{}", commands.report());
    assert!(
        commands.stdout.contains(&format!("set_topic_permissions -p {vhost} {user} aos-agent")),
        "{}",
        commands.report()
    );

    stop.cancel();
    agent.await.unwrap().expect("node agent stopped cleanly");
    fixture.cleanup().await;
}
