//! Recording notifications: exactly once per message id, the node mirror of
//! `service.update`, and values that do not fit their columns.

use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};

use crate::entity::notification::{self, NotificationStatus};
use crate::{
    ComputeServiceUpdate, IncomingNotification, SERVICE_UPDATE_EVENT, count_notifications, find_node,
    find_notification, migrate_to, node_history, notification_limits, record_notifications,
};

fn instance_update(message_id: &str) -> IncomingNotification {
    IncomingNotification {
        message_id: message_id.to_owned(),
        event_type: "instance.update".to_owned(),
        publisher_id: Some("nova-compute:fake-1".to_owned()),
        priority: Some("INFO".to_owned()),
        host: Some("fake-1".to_owned()),
        instance_uuid: Some("c34b127d-0ae8-4521-ae01-26fcc59dccc3".to_owned()),
        payload: r#"{"nova_object.name": "InstanceUpdatePayload", "nova_object.data": {}}"#.to_owned(),
        status: NotificationStatus::Recorded,
        error: None,
        compute_service: None,
    }
}

fn service_update(message_id: &str, host: &str, disabled: bool, forced_down: bool) -> IncomingNotification {
    IncomingNotification {
        message_id: message_id.to_owned(),
        event_type: "service.update".to_owned(),
        publisher_id: Some(format!("nova-compute:{host}")),
        priority: Some("INFO".to_owned()),
        host: Some(host.to_owned()),
        instance_uuid: None,
        payload: "{}".to_owned(),
        status: NotificationStatus::Recorded,
        error: None,
        compute_service: Some(ComputeServiceUpdate {
            host: host.to_owned(),
            service_id: Some(format!("uuid-{host}")),
            disabled,
            disabled_reason: disabled.then(|| "maintenance".to_owned()),
            forced_down,
            last_seen_up: Some("2026-11-23T11:23:01Z".to_owned()),
            sent_at: Some("2026-11-23 11:23:11.210423".to_owned()),
        }),
    }
}

async fn a_batch_recorded_twice_stores_each_message_once(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let batch: Vec<IncomingNotification> = (0..20).map(|index| instance_update(&format!("m-{index}"))).collect();
    let first = record_notifications(db, "listener", &batch).await?;
    assert_eq!((first.inserted, first.duplicates), (20, 0));
    let again = record_notifications(db, "listener", &batch).await?;
    assert_eq!((again.inserted, again.duplicates), (0, 20), "a redelivered batch changes nothing");
    let mut overlapping = batch[10..].to_vec();
    overlapping.extend((20..25).map(|index| instance_update(&format!("m-{index}"))));
    let mixed = record_notifications(db, "listener", &overlapping).await?;
    assert_eq!((mixed.inserted, mixed.duplicates), (5, 10));
    assert_eq!(notification::Entity::find().count(db).await?, 25);
    Ok(())
}

async fn a_message_repeated_within_one_batch_is_stored_once(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let batch = vec![instance_update("same"), instance_update("other"), instance_update("same")];
    let outcome = record_notifications(db, "listener", &batch).await?;
    assert_eq!((outcome.inserted, outcome.duplicates), (2, 1));
    assert_eq!(notification::Entity::find().count(db).await?, 2);
    Ok(())
}

async fn malformed_and_unknown_messages_are_kept_with_their_status(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let mut malformed = instance_update("malformed-abc");
    malformed.status = NotificationStatus::Malformed;
    malformed.error = Some("body is not JSON".to_owned());
    malformed.payload = "\u{fffd}not json".to_owned();
    let mut unknown = instance_update("u-1");
    unknown.event_type = "scheduler.select_destinations.start".to_owned();
    unknown.status = NotificationStatus::Unknown;
    let outcome = record_notifications(db, "listener", &[malformed, unknown, instance_update("r-1")]).await?;
    assert_eq!((outcome.inserted, outcome.inserted_malformed, outcome.inserted_unknown), (3, 1, 1));
    let counts = count_notifications(db).await?;
    for status in [NotificationStatus::Recorded, NotificationStatus::Malformed, NotificationStatus::Unknown] {
        assert_eq!(counts.get(&status), Some(&1), "{status}");
    }
    let stored = find_notification(db, "malformed-abc").await?.expect("stored");
    assert_eq!(stored.error.as_deref(), Some("body is not JSON"));
    assert_eq!(stored.payload, "\u{fffd}not json");
    Ok(())
}

async fn values_longer_than_their_columns_are_cut_to_fit(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let mut long = instance_update(&"é".repeat(100));
    long.event_type = "instance.".repeat(40);
    long.host = Some("h".repeat(300));
    long.instance_uuid = Some("u".repeat(40));
    long.payload = "x".repeat(notification_limits::PAYLOAD_BYTES + 10);
    let outcome = record_notifications(db, "listener", std::slice::from_ref(&long)).await?;
    assert_eq!(outcome.inserted, 1);
    let stored = find_notification(db, &"é".repeat(notification_limits::MESSAGE_ID)).await?.expect("stored");
    assert_eq!(stored.event_type.chars().count(), notification_limits::EVENT_TYPE);
    assert_eq!(stored.host.map(|host| host.len()), Some(notification_limits::HOST));
    assert_eq!(stored.payload.len(), notification_limits::PAYLOAD_BYTES);
    assert!(stored.error.is_some_and(|error| error.contains("payload cut")));
    let again = record_notifications(db, "listener", &[long]).await?;
    assert_eq!(again.duplicates, 1, "the cut message id still identifies the message");
    Ok(())
}

async fn a_service_update_creates_the_node_and_mirrors_later_changes_with_events(
    db: &DatabaseConnection,
) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let created = record_notifications(db, "listener", &[service_update("s-1", "fake-3", false, false)]).await?;
    assert_eq!((created.nodes_created, created.node_events), (1, 1));
    let node = find_node(db, "fake-3").await?.expect("node created");
    assert_eq!(node.state, crate::entity::NodeState::Up);
    assert_eq!(node.nova_status.as_deref(), Some("enabled"));
    assert_eq!(node.nova_service_id.as_deref(), Some("uuid-fake-3"));
    assert!(!node.nova_forced_down);
    assert_eq!(node.nova_state, None, "service.update does not say whether the service is up");

    let same = record_notifications(db, "listener", &[service_update("s-2", "fake-3", false, false)]).await?;
    assert_eq!(same.node_events, 0, "nothing changed, nothing to tell");

    let forced = record_notifications(
        db,
        "listener",
        &[service_update("s-3", "fake-3", true, false), service_update("s-4", "fake-3", true, true)],
    )
    .await?;
    assert_eq!(forced.node_events, 2, "each change of one batch is its own event");
    let node = find_node(db, "fake-3").await?.expect("node");
    assert_eq!(node.nova_status.as_deref(), Some("disabled"));
    assert!(node.nova_forced_down);
    assert_eq!(node.nova_state.as_deref(), Some("down"), "Nova reports a forced-down service down");
    assert_eq!(node.state, crate::entity::NodeState::Up, "the HA state is not the mirror's to change");

    let history = node_history(db, node.id, 10).await?;
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|event| event.kind == SERVICE_UPDATE_EVENT && event.actor == "listener"));
    assert!(history[0].reason.contains("forced_down false -> true"), "{}", history[0].reason);

    let redelivered = record_notifications(db, "listener", &[service_update("s-1", "fake-3", false, false)]).await?;
    assert_eq!(
        (redelivered.duplicates, redelivered.node_events),
        (1, 0),
        "a redelivered old update is not applied again"
    );
    assert!(find_node(db, "fake-3").await?.expect("node").nova_forced_down);
    Ok(())
}

async fn a_service_update_of_a_malformed_record_does_not_touch_nodes(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let mut odd = service_update("s-1", "fake-9", false, true);
    odd.status = NotificationStatus::Malformed;
    record_notifications(db, "listener", &[odd]).await?;
    assert!(find_node(db, "fake-9").await?.is_none());
    Ok(())
}

crate::db_test_suite!(
    a_batch_recorded_twice_stores_each_message_once,
    a_message_repeated_within_one_batch_is_stored_once,
    malformed_and_unknown_messages_are_kept_with_their_status,
    values_longer_than_their_columns_are_cut_to_fit,
    a_service_update_creates_the_node_and_mirrors_later_changes_with_events,
    a_service_update_of_a_malformed_record_does_not_touch_nodes,
);
