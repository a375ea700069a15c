//! The listener against the real broker (its own exchange and queue on vhost `/`) and a real
//! database: what Nova publishes is recorded exactly once, whatever it looks like.

mod support;

use std::time::Duration;

use aos_db::entity::NotificationStatus;
use aos_db::{ConnectionTrait as _, count_notifications, find_node, find_notification, node_history};
use aos_listener::samples;
use aos_testkit::testing::TestDatabase;
use aos_testkit::wait_until;
use support::{INFO, InProcessListener, TestBroker, total_rows, wait_for_rows};

/// Publishes every real versioned sample (each with the routing key it came with), twice.
async fn every_real_sample_is_recorded_once(database: TestDatabase) -> anyhow::Result<()> {
    database.connect_migrated().await?.close().await?;
    let broker = TestBroker::new().await?;
    let listener = InProcessListener::start(&database, &broker).await?;
    for _round in 0..2 {
        for (file, _) in samples::VERSIONED {
            let body = samples::body(file).map_err(anyhow::Error::msg)?;
            let routing_key = samples::routing_key(file).map_err(anyhow::Error::msg)?;
            broker.publish(&routing_key, [body.as_slice()]).await?;
        }
    }
    let published = 2 * samples::VERSIONED.len() as u64;
    let counters = listener.counters.clone();
    wait_until(Duration::from_secs(60), "every delivery to be recorded or recognised", || {
        let counters = counters.clone();
        async move {
            let seen = counters.snapshot();
            Ok((seen.recorded + seen.duplicates >= published).then_some(()))
        }
    })
    .await?;
    let db = listener.db().clone();
    assert_eq!(total_rows(&db).await?, samples::VERSIONED.len() as u64, "each sample exactly once");
    for (file, _) in samples::VERSIONED {
        let message = samples::message(file).map_err(anyhow::Error::msg)?;
        let message_id = message["message_id"].as_str().unwrap_or_default();
        let row = find_notification(&db, message_id).await?.unwrap_or_else(|| panic!("{file} not recorded"));
        let expected =
            if file.starts_with("scheduler.") { NotificationStatus::Unknown } else { NotificationStatus::Recorded };
        assert_eq!(row.status, expected, "{file}: {:?}", row.error);
        assert_eq!(row.event_type, file.trim_end_matches(".json"));
        assert!(!row.payload.contains("_context_auth_token"), "{file}: the request context is not stored");
    }
    assert_eq!(listener.counters.snapshot().duplicates, samples::VERSIONED.len() as u64);
    assert!(listener.is_running(), "the listener keeps running");
    assert_eq!(broker.depth().await?, 0, "everything left the queue");
    listener.stop().await?;
    broker.cleanup().await;
    database.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_sample_is_recorded_exactly_once_on_mariadb() -> anyhow::Result<()> {
    every_real_sample_is_recorded_once(TestDatabase::mysql().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_sample_is_recorded_exactly_once_on_sqlite() -> anyhow::Result<()> {
    every_real_sample_is_recorded_once(TestDatabase::sqlite().await?).await
}

fn service_update(message_id: &str, host: &str, disabled: bool, forced_down: bool) -> anyhow::Result<Vec<u8>> {
    let mut message = samples::message("service.update.json").map_err(anyhow::Error::msg)?;
    message["message_id"] = message_id.into();
    message["publisher_id"] = format!("nova-compute:{host}").into();
    let data = &mut message["payload"]["nova_object.data"];
    data["host"] = host.into();
    data["disabled"] = disabled.into();
    data["disabled_reason"] = if disabled { "maintenance".into() } else { serde_json::Value::Null };
    data["forced_down"] = forced_down.into();
    Ok(samples::envelope(&message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_update_creates_then_updates_the_node_with_novas_fields_and_an_event() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    database.connect_migrated().await?.close().await?;
    let broker = TestBroker::new().await?;
    let listener = InProcessListener::start(&database, &broker).await?;
    let db = listener.db().clone();

    broker.publish(INFO, [service_update("su-1", "it-host-1", false, false)?.as_slice()]).await?;
    let node = wait_until(Duration::from_secs(30), "node it-host-1 to appear", || {
        let db = db.clone();
        async move { Ok(find_node(&db, "it-host-1").await?) }
    })
    .await?;
    assert_eq!(node.state, aos_db::entity::NodeState::Up);
    assert_eq!(node.nova_status.as_deref(), Some("enabled"));
    assert!(!node.nova_forced_down);
    assert_eq!(node.nova_service_id.as_deref(), Some("a6f7e897-b752-45a2-b12a-5c26bec03f17"));

    broker.publish(INFO, [service_update("su-2", "it-host-1", true, true)?.as_slice()]).await?;
    let node = wait_until(Duration::from_secs(30), "node it-host-1 to be forced down", || {
        let db = db.clone();
        async move { Ok(find_node(&db, "it-host-1").await?.filter(|node| node.nova_forced_down)) }
    })
    .await?;
    assert_eq!(node.nova_status.as_deref(), Some("disabled"));
    assert_eq!(node.nova_state.as_deref(), Some("down"));
    let history = node_history(&db, node.id, 10).await?;
    let kinds: Vec<(&str, &str)> = history.iter().map(|event| (event.kind.as_str(), event.actor.as_str())).collect();
    assert_eq!(kinds, [("nova.service.update", "listener"), ("nova.service.update", "listener")]);
    let recorded = find_notification(&db, "su-2").await?.expect("recorded");
    assert_eq!(recorded.host.as_deref(), Some("it-host-1"));

    listener.stop().await?;
    broker.cleanup().await;
    database.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_unknown_types_are_recorded_and_leave_the_queue() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    database.connect_migrated().await?.close().await?;
    let broker = TestBroker::new().await?;
    let listener = InProcessListener::start(&database, &broker).await?;
    let db = listener.db().clone();

    let not_json = b"this is not json".to_vec();
    let no_oslo_message = br#"{"oslo.version": "2.0", "event_type": "service.update"}"#.to_vec();
    let message_not_json = br#"{"oslo.version": "2.0", "oslo.message": "{not json"}"#.to_vec();
    let mut unknown = samples::message("service.update.json").map_err(anyhow::Error::msg)?;
    unknown["message_id"] = "unknown-type-1".into();
    unknown["event_type"] = "volume.usage".into();
    let unknown = samples::envelope(&unknown);
    let valid = samples::body_with_message_id("instance.create.end.json", "valid-after-bad-ones")
        .map_err(anyhow::Error::msg)?;
    broker
        .publish(
            INFO,
            [not_json.as_slice(), no_oslo_message.as_slice(), message_not_json.as_slice(), unknown.as_slice()],
        )
        .await?;
    broker.publish(INFO, [valid.as_slice()]).await?;

    wait_for_rows(&db, 5).await?;
    let counts = count_notifications(&db).await?;
    assert_eq!(counts.get(&NotificationStatus::Malformed), Some(&3), "{counts:?}");
    assert_eq!(counts.get(&NotificationStatus::Unknown), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&NotificationStatus::Recorded), Some(&1), "{counts:?}");
    let kept = find_notification(&db, &aos_listener::notification::body_key(&not_json)).await?.expect("kept");
    assert_eq!(kept.payload, "this is not json", "kept as received");
    assert!(kept.error.is_some_and(|error| error.starts_with("body is not JSON")));
    let unknown = find_notification(&db, "unknown-type-1").await?.expect("kept");
    assert_eq!(unknown.status, NotificationStatus::Unknown);
    assert!(find_notification(&db, "valid-after-bad-ones").await?.is_some());

    wait_until(Duration::from_secs(30), "the queue to be empty", || {
        let broker = &broker;
        async move { Ok((broker.depth().await? == 0).then_some(())) }
    })
    .await?;
    assert!(listener.is_running(), "bad messages do not stop the listener");
    listener.stop().await?;
    broker.cleanup().await;
    database.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_published_twice_is_recorded_once() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    database.connect_migrated().await?.close().await?;
    let broker = TestBroker::new().await?;
    let listener = InProcessListener::start(&database, &broker).await?;
    let db = listener.db().clone();
    let body = samples::body_with_message_id("instance.update.json", "twice").map_err(anyhow::Error::msg)?;
    let malformed = b"{\"twice\": ".to_vec();

    // Twice in one batch, then once more after it was recorded (a later batch).
    broker.publish(INFO, [body.as_slice(), body.as_slice(), malformed.as_slice(), malformed.as_slice()]).await?;
    wait_for_rows(&db, 2).await?;
    broker.publish(INFO, [body.as_slice(), malformed.as_slice()]).await?;
    let counters = listener.counters.clone();
    wait_until(Duration::from_secs(30), "the repeats to be recognised", || {
        let counters = counters.clone();
        async move { Ok((counters.snapshot().duplicates >= 4).then_some(())) }
    })
    .await?;
    assert_eq!(total_rows(&db).await?, 2, "one row for the message, one for the malformed body");
    assert_eq!(listener.counters.snapshot().recorded, 2);

    listener.stop().await?;
    broker.cleanup().await;
    database.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_requeues_the_batch_and_it_is_recorded_once_the_database_is_back() -> anyhow::Result<()> {
    let database = TestDatabase::mysql().await?;
    database.connect_migrated().await?.close().await?;
    let broker = TestBroker::new().await?;
    let listener = InProcessListener::start(&database, &broker).await?;
    let db = listener.db().clone();

    // The table disappears from under the listener (as a broken database would fail it).
    db.execute_unprepared("RENAME TABLE notifications TO notifications_away").await?;
    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|index| samples::body_with_message_id("instance.update.json", &format!("during-outage-{index}")))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    broker.publish(INFO, bodies.iter().map(Vec::as_slice)).await?;
    let counters = listener.counters.clone();
    wait_until(Duration::from_secs(30), "a failed batch", || {
        let counters = counters.clone();
        async move { Ok((counters.snapshot().failed_batches >= 2).then_some(())) }
    })
    .await?;
    assert!(listener.is_running(), "a database failure does not stop the listener");
    let failing = listener.context.readiness.snapshot();
    assert!(matches!(failing.get("database"), Some(aos_daemon::CheckState::Failing(_))), "{failing:?}");

    db.execute_unprepared("RENAME TABLE notifications_away TO notifications").await?;
    wait_for_rows(&db, 50).await?;
    assert_eq!(total_rows(&db).await?, 50);
    wait_until(Duration::from_secs(30), "readiness to recover", || {
        let readiness = listener.context.readiness.clone();
        async move { Ok((readiness.snapshot().get("database") == Some(&aos_daemon::CheckState::Ok)).then_some(())) }
    })
    .await?;

    listener.stop().await?;
    assert_eq!(broker.depth().await?, 0);
    broker.cleanup().await;
    database.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cancelled_by_the_broker_is_started_again_and_keeps_recording() -> anyhow::Result<()> {
    let database = TestDatabase::sqlite().await?;
    database.connect_migrated().await?.close().await?;
    let broker = TestBroker::new().await?;
    let listener = InProcessListener::start(&database, &broker).await?;
    let db = listener.db().clone();
    let before = samples::body_with_message_id("instance.update.json", "before").map_err(anyhow::Error::msg)?;
    broker.publish(INFO, [before.as_slice()]).await?;
    wait_for_rows(&db, 1).await?;

    // An operator deletes the queue: the broker cancels the consumer.
    aos_bus::delete_topic_subscription(&broker.connection, &broker.subscription).await?;
    let counters = listener.counters.clone();
    wait_until(Duration::from_secs(60), "the listener to reconnect", || {
        let counters = counters.clone();
        async move { Ok((counters.snapshot().reconnects >= 1).then_some(())) }
    })
    .await?;
    let readiness = listener.context.readiness.clone();
    wait_until(Duration::from_secs(60), "the listener to consume again", || {
        let readiness = readiness.clone();
        async move {
            Ok((readiness.snapshot().get(aos_listener::BROKER_CHECK) == Some(&aos_daemon::CheckState::Ok))
                .then_some(()))
        }
    })
    .await?;
    // It declared the exchange and the queue again: what Nova sends now is recorded.
    let after = samples::body_with_message_id("instance.update.json", "after").map_err(anyhow::Error::msg)?;
    let publisher = aos_bus::ConfirmedPublisher::open(&broker.connection, &broker.subscription.exchange, 10).await?;
    publisher.publish_all(INFO, [after.as_slice()]).await?;
    publisher.close().await;
    wait_for_rows(&db, 2).await?;
    assert!(find_notification(&db, "after").await?.is_some());

    listener.stop().await?;
    broker.cleanup().await;
    database.cleanup().await;
    Ok(())
}
