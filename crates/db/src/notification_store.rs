//! Recording Nova's notifications as they are received, and mirroring what a compute
//! service's `service.update` says into its `nodes` row.
//!
//! One call records one batch in one write transaction, so a batch is either entirely
//! recorded or not at all, and the listener acknowledges it to the broker only after the
//! commit. Exactly-once: `notifications.message_id` is unique; a batch first reads which of
//! its ids are already stored (a redelivery after a crash between commit and
//! acknowledgement) and inserts only the others, with `ON CONFLICT DO NOTHING` (MySQL:
//! `ON DUPLICATE KEY UPDATE id = id`) as the guard against another listener inserting the same
//! id concurrently. Inserts are one multi-row statement per batch: a single-row insert costs
//! a round trip each (docs/benchmarks.md, `db`).
//!
//! The node mirror does not drive the HA state machine: it writes Nova's fields
//! (`nova_status`, `nova_forced_down`, `nova_service_id`, and `nova_state = down` while forced
//! down, which is what Nova's API reports for a forced-down service) and appends a
//! `nova.service.update` event when one of them changed. A host not yet known gets a row in
//! state `up`, as node sync would add it. Up/down otherwise stays the tracker's to observe:
//! `service.update` is not sent when a compute stops reporting (FACTS.md).

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;

use crate::entity::node;
use crate::entity::node_event;
use crate::entity::notification::{self, NotificationStatus};
use crate::{DbError, begin_write, db_time};

/// The widths of the `notifications` columns (migration 5); longer values are cut to fit, on
/// a character boundary, so that one odd message can never make a whole batch fail.
pub mod limits {
    pub const MESSAGE_ID: usize = 64;
    pub const EVENT_TYPE: usize = 128;
    pub const PUBLISHER_ID: usize = 255;
    pub const PRIORITY: usize = 16;
    pub const HOST: usize = 255;
    pub const INSTANCE_UUID: usize = 36;
    /// `error` is `TEXT` (64 KiB on MySQL); reasons are one line, this is only a bound.
    pub const ERROR: usize = 4000;
    /// Bytes of payload kept (`LONGTEXT`, but one statement must stay below MySQL's
    /// `max_allowed_packet`, 16 MiB by default). Nova's payloads are a few KiB.
    pub const PAYLOAD_BYTES: usize = 1024 * 1024;
}

/// The `node_events.kind` of a change mirrored from `service.update`.
pub const SERVICE_UPDATE_EVENT: &str = "nova.service.update";

/// One received message, ready to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingNotification {
    /// oslo.messaging's `message_id`, or a key derived from the body for a message that has
    /// none (malformed); a redelivery has the same key and is recorded once.
    pub message_id: String,
    pub event_type: String,
    pub publisher_id: Option<String>,
    pub priority: Option<String>,
    /// The compute host the notification is about, when it names one.
    pub host: Option<String>,
    pub instance_uuid: Option<String>,
    /// The payload as received (the whole body for a malformed message).
    pub payload: String,
    pub status: NotificationStatus,
    pub error: Option<String>,
    /// Set for a well-formed `service.update` of a `nova-compute` service: mirrored into
    /// `nodes` when the message is recorded for the first time.
    pub compute_service: Option<ComputeServiceUpdate>,
}

/// What Nova's `ServiceStatusPayload` says about a compute service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeServiceUpdate {
    pub host: String,
    /// The service's UUID (payload 1.1+).
    pub service_id: Option<String>,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub forced_down: bool,
    /// Nova's last heartbeat of the service, as Nova wrote it.
    pub last_seen_up: Option<String>,
    /// When Nova sent the notification, as Nova wrote it.
    pub sent_at: Option<String>,
}

/// What one [`record_notifications`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    /// New rows in `notifications` (every status).
    pub inserted: usize,
    /// Of those, how many are `malformed` and how many `unknown`.
    pub inserted_malformed: usize,
    pub inserted_unknown: usize,
    /// Messages already recorded (by an earlier delivery or earlier in the same batch).
    pub duplicates: usize,
    /// Nodes created from a `service.update` of a host not yet known.
    pub nodes_created: usize,
    /// `nova.service.update` events appended (one per node whose mirrored fields changed).
    pub node_events: usize,
}

/// Records `batch` in one write transaction (see the module header); `actor` is written as
/// the actor of node events (the listener passes its role).
pub async fn record_notifications(
    db: &DatabaseConnection,
    actor: &str,
    batch: &[IncomingNotification],
) -> Result<RecordOutcome, DbError> {
    let mut outcome = RecordOutcome::default();
    if batch.is_empty() {
        return Ok(outcome);
    }
    let now = db_time(Utc::now());

    // First occurrence of each key within the batch; the rest are duplicates already.
    let mut seen = HashSet::with_capacity(batch.len());
    let unique: Vec<(String, &IncomingNotification)> = batch
        .iter()
        .filter_map(|incoming| {
            let key = truncate(&incoming.message_id, limits::MESSAGE_ID).to_owned();
            seen.insert(key.clone()).then_some((key, incoming))
        })
        .collect();
    outcome.duplicates = batch.len() - unique.len();

    let transaction = begin_write(db).await?;
    let keys: Vec<&str> = unique.iter().map(|(key, _)| key.as_str()).collect();
    let stored: HashSet<String> = notification::Entity::find()
        .select_only()
        .column(notification::Column::MessageId)
        .filter(notification::Column::MessageId.is_in(keys))
        .into_tuple::<String>()
        .all(&transaction)
        .await?
        .into_iter()
        .collect();
    let fresh: Vec<&(String, &IncomingNotification)> =
        unique.iter().filter(|(key, _)| !stored.contains(key.as_str())).collect();
    outcome.duplicates += unique.len() - fresh.len();

    if !fresh.is_empty() {
        let rows = fresh.iter().map(|(key, incoming)| row(key, incoming, now));
        notification::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([notification::Column::MessageId])
            .exec_without_returning(&transaction)
            .await?;
        for (_, incoming) in &fresh {
            outcome.inserted += 1;
            match incoming.status {
                NotificationStatus::Malformed => outcome.inserted_malformed += 1,
                NotificationStatus::Unknown => outcome.inserted_unknown += 1,
                NotificationStatus::Recorded => {}
            }
        }
    }

    let updates: Vec<&ComputeServiceUpdate> = fresh
        .iter()
        .filter(|(_, incoming)| incoming.status == NotificationStatus::Recorded)
        .filter_map(|(_, incoming)| incoming.compute_service.as_ref())
        .collect();
    if !updates.is_empty() {
        mirror_service_updates(&transaction, actor, &updates, now, &mut outcome).await?;
    }
    transaction.commit().await?;
    Ok(outcome)
}

/// Applies the updates in delivery order (two updates of one host in a batch end with the
/// later one's values, each change with its own event).
async fn mirror_service_updates(
    transaction: &sea_orm::DatabaseTransaction,
    actor: &str,
    updates: &[&ComputeServiceUpdate],
    now: chrono::DateTime<Utc>,
    outcome: &mut RecordOutcome,
) -> Result<(), DbError> {
    let hosts: Vec<&str> =
        updates.iter().map(|update| update.host.as_str()).collect::<HashSet<_>>().into_iter().collect();
    let mut nodes: HashMap<String, node::Model> = node::Entity::find()
        .filter(node::Column::Name.is_in(hosts))
        .all(transaction)
        .await?
        .into_iter()
        .map(|node| (node.name.clone(), node))
        .collect();
    let mut events = Vec::new();
    for update in updates {
        let status = if update.disabled { "disabled" } else { "enabled" };
        let details = json!({
            "disabled": update.disabled,
            "disabled_reason": update.disabled_reason,
            "forced_down": update.forced_down,
            "service_id": update.service_id,
            "last_seen_up": update.last_seen_up,
            "sent_at": update.sent_at,
        });
        let Some(existing) = nodes.get(&update.host) else {
            let mut created = crate::node_store::new_node(&update.host, now);
            created.nova_service_id = Set(update.service_id.clone());
            created.nova_status = Set(Some(status.to_owned()));
            created.nova_state = Set(update.forced_down.then(|| "down".to_owned()));
            created.nova_forced_down = Set(update.forced_down);
            let created = created.insert(transaction).await?;
            outcome.nodes_created += 1;
            events.push(event(
                created.id,
                now,
                actor,
                "new compute host reported by Nova's service.update".into(),
                details,
            ));
            nodes.insert(created.name.clone(), created);
            continue;
        };
        let mut changes = Vec::new();
        let mut change = |field: &str, from: &dyn std::fmt::Debug, to: &dyn std::fmt::Debug| {
            changes.push(format!("{field} {from:?} -> {to:?}"));
        };
        let service_id = update.service_id.clone().or_else(|| existing.nova_service_id.clone());
        if service_id != existing.nova_service_id {
            change("service_id", &existing.nova_service_id, &service_id);
        }
        if existing.nova_status.as_deref() != Some(status) {
            change("status", &existing.nova_status, &status);
        }
        if existing.nova_forced_down != update.forced_down {
            change("forced_down", &existing.nova_forced_down, &update.forced_down);
        }
        let nova_state = if update.forced_down { Some("down".to_owned()) } else { existing.nova_state.clone() };
        if nova_state != existing.nova_state {
            change("state", &existing.nova_state, &nova_state);
        }
        if changes.is_empty() {
            continue;
        }
        let mut active: node::ActiveModel = existing.clone().into();
        active.nova_service_id = Set(service_id);
        active.nova_status = Set(Some(status.to_owned()));
        active.nova_forced_down = Set(update.forced_down);
        active.nova_state = Set(nova_state);
        active.updated_at = Set(now);
        let updated = active.update(transaction).await?;
        events.push(event(updated.id, now, actor, format!("Nova's service.update: {}", changes.join(", ")), details));
        nodes.insert(updated.name.clone(), updated);
    }
    outcome.node_events += events.len();
    if !events.is_empty() {
        node_event::Entity::insert_many(events).exec_without_returning(transaction).await?;
    }
    Ok(())
}

fn event(
    node_id: i64,
    now: chrono::DateTime<Utc>,
    actor: &str,
    reason: String,
    details: serde_json::Value,
) -> node_event::ActiveModel {
    node_event::ActiveModel {
        node_id: Set(node_id),
        occurred_at: Set(now),
        kind: Set(SERVICE_UPDATE_EVENT.to_owned()),
        from_state: Set(None),
        to_state: Set(None),
        actor: Set(actor.to_owned()),
        reason: Set(reason),
        task_id: Set(None),
        details: Set(Some(details)),
        ..Default::default()
    }
}

fn row(key: &str, incoming: &IncomingNotification, now: chrono::DateTime<Utc>) -> notification::ActiveModel {
    let cut = |value: &Option<String>, limit| value.as_deref().map(|text| truncate(text, limit).to_owned());
    let mut error = cut(&incoming.error, limits::ERROR);
    if incoming.payload.len() > limits::PAYLOAD_BYTES {
        let note = format!("payload cut to {} of its {} bytes", limits::PAYLOAD_BYTES, incoming.payload.len());
        error = Some(match error {
            Some(reason) => format!("{reason}; {note}"),
            None => note,
        });
    }
    notification::ActiveModel {
        message_id: Set(key.to_owned()),
        event_type: Set(truncate(&incoming.event_type, limits::EVENT_TYPE).to_owned()),
        publisher_id: Set(cut(&incoming.publisher_id, limits::PUBLISHER_ID)),
        priority: Set(cut(&incoming.priority, limits::PRIORITY)),
        host: Set(cut(&incoming.host, limits::HOST)),
        instance_uuid: Set(cut(&incoming.instance_uuid, limits::INSTANCE_UUID)),
        payload: Set(truncate_bytes(&incoming.payload, limits::PAYLOAD_BYTES).to_owned()),
        status: Set(incoming.status),
        error: Set(error),
        received_at: Set(now),
        ..Default::default()
    }
}

/// At most `limit` characters of `text` (column widths count characters on both backends).
pub fn truncate(text: &str, limit: usize) -> &str {
    match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// At most `limit` bytes of `text`, cut on a character boundary.
fn truncate_bytes(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How many notifications are recorded, by status (for tests, benchmarks and operators).
pub async fn count_notifications(db: &DatabaseConnection) -> Result<HashMap<NotificationStatus, u64>, DbError> {
    use sea_orm::ExprTrait as _;
    use sea_orm::sea_query::Expr;
    let rows: Vec<(NotificationStatus, i64)> = notification::Entity::find()
        .select_only()
        .column(notification::Column::Status)
        .column_as(Expr::col(notification::Column::Id).count(), "count")
        .group_by(notification::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|(status, count)| (status, u64::try_from(count).unwrap_or(0))).collect())
}

/// The notification recorded under `message_id`.
pub async fn find_notification(
    db: &DatabaseConnection,
    message_id: &str,
) -> Result<Option<notification::Model>, DbError> {
    Ok(notification::Entity::find().filter(notification::Column::MessageId.eq(message_id)).one(db).await?)
}
