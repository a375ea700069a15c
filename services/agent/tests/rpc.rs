//! The request protocol on the real RabbitMQ, with node users holding exactly the trust
//! model's permissions: the timeouts and retries against misbehaving nodes, and forged or
//! malformed messages.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use aos_agent::node::Answering;
use aos_agent::protocol::{Envelope, Kind, LocalCheck, Request, Response, node_key, request_key};
use aos_agent::transport::AgentBus;
use aos_agent::{RequestError, Requester};
use common::{RunningNode, TestVhost, request_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_unresponsive_and_late_nodes_behave_as_the_timeouts_and_retries_say() -> anyhow::Result<()> {
    let mut vhost = TestVhost::create().await?;
    let tag = vhost.tag.clone();
    let [healthy, silent, unresponsive, late] =
        ["healthy", "silent", "unresponsive", "late"].map(|role| format!("cmp-{tag}-{role}"));
    vhost.add_nodes(&[&healthy, &silent, &unresponsive, &late]).await?;
    // The requester declares the exchange the nodes' users may not create.
    let settings = request_settings();
    let requester = Requester::connect(&vhost.controller_uri(), "guest", settings.clone()).await?;
    let interval = Duration::from_secs(1);
    // Late: answers 3 s after the request, past the 2 s response timeout but within the
    // second attempt's wait.
    let nodes = [
        (healthy.as_str(), Answering::Normal),
        (silent.as_str(), Answering::Silent),
        (unresponsive.as_str(), Answering::ConfirmOnly),
        (late.as_str(), Answering::Late(Duration::from_secs(3))),
    ]
    .map(|(node, answering)| RunningNode::start(vhost.node_settings(node, answering, interval)));
    for node in &nodes {
        node.connected().await?;
    }

    let (healthy_answer, silent_answer, unresponsive_answer, late_answer) = tokio::join!(
        requester.request(&healthy, &Request::Facts),
        requester.request(&silent, &Request::Facts),
        requester.request(&unresponsive, &Request::Facts),
        requester.request(&late, &Request::Check { check: LocalCheck::Storages }),
    );

    let answer = healthy_answer?;
    assert_eq!((answer.attempts, answer.answered_attempt), (1, 1));
    match answer.response {
        Response::Facts { facts } => assert_eq!(facts.host, healthy),
        other => panic!("facts expected, got {other:?}"),
    }
    // Never confirmed: sent 1 + retries times, each waiting the confirm timeout.
    assert_eq!(silent_answer, Err(RequestError::NoConfirm { node: silent.clone(), attempts: settings.retries + 1 }));
    // Confirmed every time, never responded.
    assert_eq!(
        unresponsive_answer,
        Err(RequestError::NoResponse { node: unresponsive.clone(), attempts: settings.retries + 1 })
    );
    // The first send timed out; the second was sent, and the first one's late response was
    // accepted while waiting for the second.
    let answer = late_answer?;
    assert_eq!((answer.attempts, answer.answered_attempt), (2, 1), "{answer:?}");
    assert!(matches!(answer.response, Response::Check { check: LocalCheck::Storages, passed: true, .. }));
    assert_eq!(requester.dropped(), 0);

    for node in nodes {
        node.stop().await?;
    }
    requester.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cannot_speak_for_another_and_malformed_messages_are_dropped() -> anyhow::Result<()> {
    let mut vhost = TestVhost::create().await?;
    let tag = vhost.tag.clone();
    let (victim, intruder) = (format!("cmp-{tag}-victim"), format!("cmp-{tag}-intruder"));
    vhost.add_nodes(&[&victim, &intruder]).await?;
    let requester = Requester::connect(&vhost.controller_uri(), "guest", request_settings()).await?;
    let node = RunningNode::start(vhost.node_settings(&victim, Answering::Normal, Duration::from_secs(1)));
    node.connected().await?;
    let intruder_user = format!("aos-agent-{intruder}");
    let victim_user = format!("aos-agent-{victim}");

    // The broker refuses the intruder's message under the victim's routing key (topic
    // permission) and with the victim's user-id (validated user-id), and the intruder's
    // attempt to read the victim's requests.
    let forged = Envelope::new(Kind::Confirm, &victim, Some(uuid::Uuid::new_v4()), serde_json::json!({}));
    let body = serde_json::to_vec(&forged)?;
    let bus = AgentBus::connect(&vhost.node_uri(&intruder), &intruder_user, "intruder").await?;
    let refused = bus.publish_raw(&node_key(Kind::Confirm, &victim), &body, Some(&intruder_user), None).await;
    assert!(refused.is_err(), "a node published under another node's routing key");
    bus.close().await;
    let bus = AgentBus::connect(&vhost.node_uri(&intruder), &intruder_user, "intruder").await?;
    let refused = bus.publish_raw(&node_key(Kind::Confirm, &intruder), &body, Some(&victim_user), None).await;
    assert!(refused.is_err(), "a node published with another node's user-id");
    bus.close().await;
    let bus = AgentBus::connect(&vhost.node_uri(&intruder), &intruder_user, "intruder").await?;
    assert!(bus.consume(&aos_agent::protocol::node_queue(&victim), "intruder").await.is_err());
    bus.close().await;
    let bus = AgentBus::connect(&vhost.node_uri(&intruder), &intruder_user, "intruder").await?;
    assert!(bus.declare_node_topology(&victim).await.is_err(), "a node bound a queue to another node's requests");
    bus.close().await;

    // A user the broker lets publish anything (here the controller's) still cannot pass as a
    // node: the requester drops replies whose user-id is not that node's user.
    let controller_bus = AgentBus::connect(&vhost.controller_uri(), "guest", "forger").await?;
    controller_bus.publish_raw(&node_key(Kind::Confirm, &victim), &body, Some("guest"), None).await?;
    // Garbage, a wrong version and an unknown request are dropped by whoever receives them.
    controller_bus.publish_raw(&node_key(Kind::Response, &victim), b"{not json", Some("guest"), None).await?;
    controller_bus.publish_raw(&request_key(&victim), b"\x00\x01", Some("guest"), None).await?;
    let exec = Envelope::new(Kind::Request, &victim, None, serde_json::json!({"request": "exec", "command": "reboot"}));
    controller_bus.publish(&exec, None).await?;
    let smuggled =
        Envelope::new(Kind::Request, &victim, None, serde_json::json!({"request": "facts", "command": "reboot"}));
    controller_bus.publish(&smuggled, None).await?;
    controller_bus.close().await;

    aos_testkit::wait_until(Duration::from_secs(30), "the forged and malformed messages to be dropped", || async {
        Ok((requester.dropped() >= 2 && node.counters.messages_dropped.load(Ordering::Relaxed) >= 3).then_some(()))
    })
    .await?;
    assert_eq!(node.counters.requests_answered.load(Ordering::Relaxed), 0, "a malformed request was answered");
    // And the node still answers a proper request.
    let answer = requester.request(&victim, &Request::Check { check: LocalCheck::NovaCompute }).await?;
    assert!(matches!(answer.response, Response::Check { check: LocalCheck::NovaCompute, .. }));
    // (The node counts an answer once the broker confirmed it, possibly after we read it.)
    aos_testkit::wait_until(Duration::from_secs(10), "the node to count its answer", || async {
        Ok((node.counters.requests_answered.load(Ordering::Relaxed) == 1).then_some(()))
    })
    .await?;
    node.stop().await?;
    requester.close().await;
    Ok(())
}

/// The heartbeat recorder keeps a node's own heartbeats and drops forged and malformed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_recorder_keeps_a_nodes_heartbeats_and_drops_forged_ones() -> anyhow::Result<()> {
    let database = aos_testkit::testing::TestDatabase::sqlite().await?;
    let db = database.connect_migrated().await?;
    let mut vhost = TestVhost::create().await?;
    let (real, forged) = (format!("cmp-{}-real", vhost.tag), format!("cmp-{}-forged", vhost.tag));
    vhost.add_nodes(&[&real]).await?;
    let settings = request_settings();
    let controller = AgentBus::connect(&vhost.controller_uri(), "guest", "recorder").await?;
    controller.declare_controller_topology().await?;
    let counters = aos_agent::RecorderCounters::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let node = RunningNode::start(vhost.node_settings(&real, Answering::Normal, Duration::from_secs(1)));
    node.connected().await?;
    // Forged: a heartbeat for a node, published by a user that is not that node's.
    let forger = AgentBus::connect(&vhost.controller_uri(), "guest", "forger").await?;
    let body = serde_json::json!({"sequence": 1, "interval_seconds": 1.0, "facts": null});
    forger.publish(&Envelope::new(Kind::Heartbeat, &forged, None, body), None).await?;
    forger.publish_raw(&node_key(Kind::Heartbeat, &forged), b"[]", Some("guest"), None).await?;
    let recording = aos_agent::controller::record_heartbeats(
        &db,
        &controller,
        None,
        Duration::from_secs(15),
        &settings,
        &counters,
        &stop,
    );
    let waiting = async {
        let waited =
            aos_testkit::wait_until(Duration::from_secs(30), "heartbeats recorded and forgeries dropped", || async {
                let recorded = aos_db::find_agent_heartbeat(&db, &real).await?.filter(|row| row.sequence >= 2);
                Ok(recorded.filter(|_| counters.dropped.load(Ordering::Relaxed) >= 2))
            })
            .await;
        stop.cancel();
        waited
    };
    let (recorded, waited) = tokio::join!(recording, waiting);
    waited?;
    recorded?;
    assert!(aos_db::find_agent_heartbeat(&db, &forged).await?.is_none(), "a forged heartbeat was recorded");
    assert!(counters.recorded.load(Ordering::Relaxed) >= 2);
    node.stop().await?;
    forger.close().await;
    controller.close().await;
    db.close().await?;
    database.cleanup().await;
    Ok(())
}
