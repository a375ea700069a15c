//! Entities against the real schema: values round-trip unchanged on both backends, and the
//! constraints the design relies on (unique steps, exactly-once notifications, cascades)
//! hold.

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, ModelTrait, QueryFilter,
    QueryOrder,
};
use serde_json::json;

use crate::entity::{
    NodeState, NotificationStatus, TaskState, TaskStepState, node, node_event, notification, power_device, task,
    task_step,
};
use crate::{DbError, db_time, migrate_to};

fn sample_time() -> DateTime<Utc> {
    // Sub-microsecond digits included on purpose: db_time must make them round-trip.
    db_time(DateTime::parse_from_rfc3339("2026-05-06T07:08:09.123456789Z").unwrap().with_timezone(&Utc))
}

fn new_node(name: &str, now: DateTime<Utc>) -> node::ActiveModel {
    node::ActiveModel {
        name: Set(name.to_owned()),
        state: Set(NodeState::Up),
        state_changed_at: Set(now),
        nova_forced_down: Set(false),
        evacuation_allowed: Set(true),
        is_reserve: Set(false),
        down_observations: Set(0),
        up_observations: Set(0),
        removed_from_nova: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

fn new_step(task_id: &str, seq: i32, name: &str, target: &str) -> task_step::ActiveModel {
    task_step::ActiveModel {
        task_id: Set(task_id.to_owned()),
        seq: Set(seq),
        name: Set(name.to_owned()),
        target: Set(target.to_owned()),
        state: Set(TaskStepState::Pending),
        attempts: Set(0),
        ..Default::default()
    }
}

async fn nodes_and_events_round_trip_and_events_go_with_their_node(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let now = sample_time();

    let mut compute = new_node("compute-1.example", now);
    compute.state = Set(NodeState::EvacuationFailed);
    compute.nova_service_id = Set(Some("6f1c2a9e-0000-4000-8000-000000000001".to_owned()));
    compute.nova_status = Set(Some("disabled".to_owned()));
    compute.nova_state = Set(Some("down".to_owned()));
    compute.nova_forced_down = Set(true);
    compute.down_observations = Set(3);
    let inserted = compute.insert(db).await?;
    let read = node::Entity::find_by_id(inserted.id).one(db).await?.context("node not found")?;
    assert_eq!(read, inserted);
    assert_eq!(read.state, NodeState::EvacuationFailed);
    assert_eq!(read.state_changed_at, now, "microsecond timestamps round-trip");

    // Every state name is storable and reads back as itself.
    for state in <NodeState as sea_orm::Iterable>::iter() {
        let mut active: node::ActiveModel = read.clone().into();
        active.state = Set(state);
        assert_eq!(active.update(db).await?.state, state);
        assert_eq!(state.to_string().parse::<NodeState>()?, state);
    }
    assert!("exploded".parse::<NodeState>().is_err());

    // Host names are case-sensitive on both backends.
    new_node("Compute-1.example", now).insert(db).await?;
    let duplicate = new_node("compute-1.example", now).insert(db).await;
    assert!(DbError::from(duplicate.err().context("duplicate node name accepted")?).is_unique_violation());

    let details = json!({"nova": {"state": "down", "observations": 3}, "note": "ünïcode ✓"});
    for (offset, kind) in [(0, "nova_down_observed"), (1, "state_changed")] {
        node_event::ActiveModel {
            node_id: Set(inserted.id),
            occurred_at: Set(now + TimeDelta::seconds(offset)),
            kind: Set(kind.to_owned()),
            from_state: Set(Some("suspect".to_owned())),
            to_state: Set(Some("down".to_owned())),
            actor: Set("beat@ctl1".to_owned()),
            reason: Set("3 consecutive down observations".repeat(100)),
            task_id: Set(None),
            details: Set(Some(details.clone())),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }
    let events = node_event::Entity::find()
        .filter(node_event::Column::NodeId.eq(inserted.id))
        .order_by_asc(node_event::Column::OccurredAt)
        .all(db)
        .await?;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, "nova_down_observed");
    assert_eq!(events[1].details.as_ref(), Some(&details));
    assert_eq!(events[1].occurred_at, now + TimeDelta::seconds(1));

    // An event must name an existing node.
    let orphan = node_event::ActiveModel {
        node_id: Set(inserted.id + 1000),
        occurred_at: Set(now),
        kind: Set("state_changed".to_owned()),
        actor: Set("test".to_owned()),
        reason: Set(String::new()),
        ..Default::default()
    }
    .insert(db)
    .await;
    assert!(DbError::from(orphan.err().context("orphan event accepted")?).is_foreign_key_violation());

    read.delete(db).await?;
    assert_eq!(node_event::Entity::find().all(db).await?.len(), 0, "events cascade");
    Ok(())
}

async fn tasks_and_steps_round_trip_and_a_step_is_recorded_once(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let now = sample_time();
    let node = new_node("compute-2", now).insert(db).await?;
    let task_id = uuid::Uuid::new_v4().to_string();
    let payload = json!({"host": "compute-2", "instances": ["a", "b"]});
    let inserted = task::ActiveModel {
        id: Set(task_id.clone()),
        kind: Set("evacuate_host".to_owned()),
        node_id: Set(Some(node.id)),
        state: Set(TaskState::Running),
        payload: Set(Some(payload.clone())),
        result: Set(None),
        error: Set(None),
        attempts: Set(1),
        claimed_by: Set(Some("worker@ctl2:4242".to_owned())),
        claimed_at: Set(Some(now)),
        heartbeat_at: Set(Some(now)),
        idempotency_key: Set(Some("evacuate:compute-2:1".to_owned())),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    }
    .insert(db)
    .await?;
    let read = task::Entity::find_by_id(task_id.clone()).one(db).await?.context("task not found")?;
    assert_eq!(read, inserted);
    assert_eq!(read.payload, Some(payload));
    assert!(!read.state.is_final());

    new_step(&task_id, 1, "fence", "").insert(db).await?;
    new_step(&task_id, 2, "evacuate_instance", "a").insert(db).await?;
    new_step(&task_id, 3, "evacuate_instance", "b").insert(db).await?;

    // The same (task, name, target) twice is rejected, also with the empty target.
    for (name, target) in [("evacuate_instance", "a"), ("fence", "")] {
        let duplicate = new_step(&task_id, 9, name, target).insert(db).await;
        let err = DbError::from(duplicate.err().context("duplicate step accepted")?);
        assert!(err.is_unique_violation(), "{err:?}");
    }

    // A second task with the same idempotency key is rejected; tasks without a key are not.
    let mut twin: task::ActiveModel = read.clone().into();
    twin.id = Set(uuid::Uuid::new_v4().to_string());
    let twin_result = twin.clone().insert(db).await;
    assert!(DbError::from(twin_result.err().context("duplicate key accepted")?).is_unique_violation());
    for _ in 0..2 {
        let mut keyless = twin.clone();
        keyless.id = Set(uuid::Uuid::new_v4().to_string());
        keyless.idempotency_key = Set(None);
        keyless.insert(db).await?;
    }

    let mut step: task_step::ActiveModel = task_step::Entity::find()
        .filter(task_step::Column::TaskId.eq(task_id.clone()))
        .filter(task_step::Column::Name.eq("fence"))
        .one(db)
        .await?
        .context("step not found")?
        .into();
    step.state = Set(TaskStepState::Succeeded);
    step.finished_at = Set(Some(now));
    step.details = Set(Some(json!({"power": "off"})));
    step.update(db).await?;
    let steps = task_step::Entity::find()
        .filter(task_step::Column::TaskId.eq(task_id.clone()))
        .order_by_asc(task_step::Column::Seq)
        .all(db)
        .await?;
    let summary: Vec<(i32, &str, &str, TaskStepState)> =
        steps.iter().map(|step| (step.seq, step.name.as_str(), step.target.as_str(), step.state)).collect();
    assert_eq!(
        summary,
        [
            (1, "fence", "", TaskStepState::Succeeded),
            (2, "evacuate_instance", "a", TaskStepState::Pending),
            (3, "evacuate_instance", "b", TaskStepState::Pending),
        ]
    );

    // Task history outlives its node; steps go with their task.
    node.delete(db).await?;
    let orphaned = task::Entity::find_by_id(task_id.clone()).one(db).await?.context("task deleted with its node")?;
    assert_eq!(orphaned.node_id, None);
    orphaned.delete(db).await?;
    let remaining = task_step::Entity::find().filter(task_step::Column::TaskId.eq(task_id)).all(db).await?;
    assert!(remaining.is_empty());
    Ok(())
}

async fn a_notification_is_recorded_once_per_message_id(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let now = sample_time();
    // Larger than MySQL TEXT (64 KiB) and not JSON: kept as received.
    let payload = format!("{{not json {}", "x".repeat(100_000));
    let record = notification::ActiveModel {
        message_id: Set("4b8f3c0e-1111-4222-8333-444455556666".to_owned()),
        event_type: Set("service.update".to_owned()),
        publisher_id: Set(Some("nova-compute:compute-1".to_owned())),
        priority: Set(Some("INFO".to_owned())),
        host: Set(Some("compute-1".to_owned())),
        instance_uuid: Set(None),
        payload: Set(payload.clone()),
        status: Set(NotificationStatus::Malformed),
        error: Set(Some("expected value at line 1 column 2".to_owned())),
        received_at: Set(now),
        ..Default::default()
    };
    let inserted = record.clone().insert(db).await?;
    assert_eq!(inserted.payload.len(), payload.len());
    let redelivered = record.insert(db).await;
    assert!(DbError::from(redelivered.err().context("redelivery recorded twice")?).is_unique_violation());
    assert_eq!(notification::Entity::find().all(db).await?.len(), 1);
    Ok(())
}

async fn power_device_ciphertext_is_stored_as_bytes(db: &DatabaseConnection) -> anyhow::Result<()> {
    migrate_to(db, None).await?;
    let now = sample_time();
    let ciphertext: Vec<u8> = (0..=255).collect();
    let device = power_device::ActiveModel {
        name: Set("bmc-compute-1".to_owned()),
        driver: Set("ipmi".to_owned()),
        address: Set("127.0.0.1".to_owned()),
        port: Set(Some(6230)),
        username: Set(Some("admin".to_owned())),
        secret_ciphertext: Set(Some(ciphertext.clone())),
        options: Set(Some(json!({"interface": "lanplus"}))),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    let read = power_device::Entity::find_by_id(device.id).one(db).await?.context("device not found")?;
    assert_eq!(read.secret_ciphertext, Some(ciphertext));
    // Serialising a device (API, logs) never includes the ciphertext.
    assert!(serde_json::to_value(&read)?.get("secret_ciphertext").is_none());
    Ok(())
}

crate::db_test_suite!(
    nodes_and_events_round_trip_and_events_go_with_their_node,
    tasks_and_steps_round_trip_and_a_step_is_recorded_once,
    a_notification_is_recorded_once_per_message_id,
    power_device_ciphertext_is_stored_as_bytes,
);
