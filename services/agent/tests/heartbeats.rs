//! Heartbeats end to end with real processes: a controller agent (lease holder, MariaDB) and a
//! node agent process on the real RabbitMQ as its own broker user. The node's heartbeats are
//! recorded, its state file is written; once the node agent is killed its heartbeat goes stale
//! after `[agent] heartbeat_stale_after` and the node tracker sees the agent silent.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aos_ha::sim::{SimCloud, SimSettings};
use aos_testkit::{Scratch, testing::TestDatabase};
use common::TestVhost;

const STALE_AFTER_SECONDS: i64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_agent_goes_stale_and_the_tracker_sees_it_silent() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let db = database.connect_migrated().await?;
    let mut vhost = TestVhost::create().await?;
    let node = format!("cmp-{}-hb", vhost.tag);
    vhost.add_nodes(&[&node]).await?;
    let scratch = Scratch::new()?;
    let storage = scratch.path().join("storage");
    std::fs::create_dir(&storage)?;

    let mut controller = common::spawn_controller(&scratch, &database, &vhost, STALE_AFTER_SECONDS as u64)?;
    let mut node_process = common::spawn_node(&scratch, &vhost, &node, 1, Some(&storage))?;

    let recorded = aos_testkit::wait_until(Duration::from_secs(60), "the node's heartbeat to be recorded", || async {
        Ok(aos_db::find_agent_heartbeat(&db, &node).await?.filter(|row| row.sequence >= 2))
    })
    .await
    .with_context(|| {
        format!("controller log:\n{}\nnode log:\n{}", controller.log(), read(&scratch, &format!("node-{node}.log")))
    })?;
    let facts = recorded.facts.context("heartbeat without facts")?;
    assert_eq!(facts["host"], node.as_str());
    assert!(facts["instances"]["source"].is_string(), "{facts}");
    assert_eq!((recorded.expires_at - recorded.received_at).num_seconds(), STALE_AFTER_SECONDS);
    let state_file = aos_storage::state_file::read_state_file(&storage, &node).await?.context("no state file")?;
    assert_eq!(state_file.node, node);

    // The tracker, with Nova still reporting the host up (Nova has not noticed anything).
    let sim = SimCloud::new(SimSettings { call_latency: Duration::ZERO, ..SimSettings::default() });
    sim.add_host(&node, false);
    aos_ha::cloud::sync_nodes_from(&db, &sim, |_| true, "test").await?;
    let rules = aos_ha::TrackerRules {
        mutex: 3,
        mutex_up: 1,
        max_down_hosts: 0,
        allow_evacuate_host: true,
        deny_evacuate: Default::default(),
    };
    let report = aos_ha::tracker_round(&db, &sim, &rules, None, "test").await?;
    assert!(report.agents_silent.is_empty(), "{:?}", report.agents_silent);

    let killed_at = Instant::now();
    let killed_at_wall = chrono::Utc::now();
    node_process.start_kill()?;
    node_process.wait().await?;
    let silent_at = aos_testkit::wait_until(Duration::from_secs(60), "the tracker to see the agent silent", || async {
        let report = aos_ha::tracker_round(&db, &sim, &rules, None, "test").await?;
        Ok(report.agents_silent.contains(&node).then(Instant::now))
    })
    .await?;
    // The last heartbeat recorded came before the kill, and expired stale_after after it came.
    let last = aos_db::find_agent_heartbeat(&db, &node).await?.context("heartbeat row gone")?;
    assert!(last.received_at <= killed_at_wall + chrono::Duration::milliseconds(500));
    assert_eq!((last.expires_at - last.received_at).num_seconds(), STALE_AFTER_SECONDS);
    println!(
        "node agent killed → tracker saw it silent after {:.2} s (heartbeat_interval 1 s, heartbeat_stale_after {STALE_AFTER_SECONDS} s)",
        silent_at.duration_since(killed_at).as_secs_f64()
    );

    controller.sigterm()?;
    let status = controller.wait_exit(Duration::from_secs(30)).await?;
    assert!(status.success(), "controller exit {status:?}:\n{}", controller.log());
    db.close().await?;
    database.cleanup().await;
    Ok(())
}

fn read(scratch: &Scratch, name: &str) -> String {
    std::fs::read_to_string(scratch.path().join(name)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_role_runs_without_a_database_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let mut vhost = TestVhost::create().await?;
    let node = format!("cmp-{}-term", vhost.tag);
    vhost.add_nodes(&[&node]).await?;
    // The exchange is the controller side's to declare.
    aos_agent::Requester::connect(&vhost.controller_uri(), "guest", common::request_settings()).await?.close().await;
    let scratch = Scratch::new()?;
    let mut process = common::spawn_node(&scratch, &vhost, &node, 1, None)?;
    let log = format!("node-{node}.log");
    aos_testkit::wait_until(Duration::from_secs(30), "the node agent to connect", || async {
        Ok(read(&scratch, &log).contains("node agent connected to RabbitMQ").then_some(()))
    })
    .await
    .with_context(|| read(&scratch, &log))?;
    let pid = process.id().context("node agent pid")?;
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), process.wait()).await??;
    assert!(status.success(), "exit {status:?}:\n{}", read(&scratch, &log));
    let log = read(&scratch, &log);
    assert!(log.contains("node agent stopped"), "{log}");
    assert!(!log.to_lowercase().contains("database"), "the node role mentioned a database:\n{log}");
    Ok(())
}

/// Two controller agents: only the lease holder records heartbeats; when it stops, the other
/// takes over and the node's heartbeats keep being recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_records_heartbeats_and_a_standby_takes_over() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    let db = database.connect_migrated().await?;
    let mut vhost = TestVhost::create().await?;
    let node = format!("cmp-{}-ha", vhost.tag);
    vhost.add_nodes(&[&node]).await?;
    let first_scratch = Scratch::new()?;
    let second_scratch = Scratch::new()?;
    let mut first = common::spawn_controller(&first_scratch, &database, &vhost, 3)?;
    aos_testkit::wait_until(Duration::from_secs(30), "the first controller to be active", || async {
        Ok(first.log().contains("controller agent active").then_some(()))
    })
    .await?;
    let mut second = common::spawn_controller(&second_scratch, &database, &vhost, 3)?;
    let _node_process = common::spawn_node(&first_scratch, &vhost, &node, 1, None)?;
    let before = aos_testkit::wait_until(Duration::from_secs(60), "heartbeats recorded", || async {
        Ok(aos_db::find_agent_heartbeat(&db, &node).await?.filter(|row| row.sequence >= 3))
    })
    .await?;
    assert!(!second.log().contains("controller agent active"), "two active controllers:\n{}", second.log());

    first.sigterm()?;
    assert!(first.wait_exit(Duration::from_secs(30)).await?.success(), "{}", first.log());
    aos_testkit::wait_until(Duration::from_secs(60), "the standby to take over", || async {
        Ok(second.log().contains("controller agent active").then_some(()))
    })
    .await?;
    let after = aos_testkit::wait_until(Duration::from_secs(60), "heartbeats recorded by the new holder", || async {
        Ok(aos_db::find_agent_heartbeat(&db, &node).await?.filter(|row| row.sequence >= before.sequence + 3))
    })
    .await?;
    assert!(after.received_at > before.received_at);
    second.sigterm()?;
    assert!(second.wait_exit(Duration::from_secs(30)).await?.success(), "{}", second.log());
    db.close().await?;
    database.cleanup().await;
    Ok(())
}
