//! From AMQP bodies to recorded rows: the listener's single step. [`prepare`] parses a batch
//! (pure, no I/O) into what `aos_db::record_notifications` stores; [`record_batch`] does both
//! and keeps the counters. The consume loop in `lib.rs` only moves batches in and
//! acknowledgements out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aos_db::entity::NotificationStatus;
use aos_db::{ComputeServiceUpdate, DatabaseConnection, IncomingNotification, RecordOutcome};

use crate::notification::{self, Event, Malformed, Notification};

/// The only binary whose `service.update` is mirrored into `nodes`.
const COMPUTE_BINARY: &str = "nova-compute";

/// What the listener did since it started; logged at shutdown, read by tests and the bench.
#[derive(Debug, Default)]
pub struct Counters {
    /// Deliveries taken from the broker (redeliveries included).
    pub consumed: AtomicU64,
    /// Rows newly written to `notifications` (every status).
    pub recorded: AtomicU64,
    /// Deliveries whose message was already recorded (redelivered, or published twice).
    pub duplicates: AtomicU64,
    /// Of `recorded`: kept as `malformed` / as `unknown`.
    pub malformed: AtomicU64,
    pub unknown: AtomicU64,
    /// Batches committed and acknowledged.
    pub batches: AtomicU64,
    /// Batches whose recording failed (requeued and retried).
    pub failed_batches: AtomicU64,
    /// Connections to the broker after the first.
    pub reconnects: AtomicU64,
    /// Time spent parsing and recording (committing), in nanoseconds, for the benchmark's
    /// breakdown.
    pub parse_nanos: AtomicU64,
    pub record_nanos: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub consumed: u64,
    pub recorded: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub unknown: u64,
    pub batches: u64,
    pub failed_batches: u64,
    pub reconnects: u64,
    pub parse_time: Duration,
    pub record_time: Duration,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CountersSnapshot {
            consumed: read(&self.consumed),
            recorded: read(&self.recorded),
            duplicates: read(&self.duplicates),
            malformed: read(&self.malformed),
            unknown: read(&self.unknown),
            batches: read(&self.batches),
            failed_batches: read(&self.failed_batches),
            reconnects: read(&self.reconnects),
            parse_time: Duration::from_nanos(read(&self.parse_nanos)),
            record_time: Duration::from_nanos(read(&self.record_nanos)),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, amount: usize) {
        counter.fetch_add(amount as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_time(counter: &AtomicU64, elapsed: Duration) {
        counter.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn count_outcome(&self, outcome: &RecordOutcome) {
        Self::add(&self.recorded, outcome.inserted);
        Self::add(&self.duplicates, outcome.duplicates);
        Self::add(&self.malformed, outcome.inserted_malformed);
        Self::add(&self.unknown, outcome.inserted_unknown);
        Self::add(&self.batches, 1);
        // Exported by the listener's `/metrics`: notifications recorded once, duplicates
        // (redelivered, already recorded), malformed and unknown event types (kept raw).
        for (outcome, count) in [
            ("recorded", outcome.inserted),
            ("duplicate", outcome.duplicates),
            ("malformed", outcome.inserted_malformed),
            ("unknown", outcome.inserted_unknown),
        ] {
            metrics::counter!("aos_notifications_consumed_total", "outcome" => outcome).increment(count as u64);
        }
    }
}

/// Parses every body of a batch into the rows to record. Never fails: a body that cannot be
/// read becomes a `malformed` row.
pub fn prepare(bodies: &[Vec<u8>]) -> Vec<IncomingNotification> {
    bodies.iter().map(|body| incoming(body)).collect()
}

/// The row for one body.
pub fn incoming(body: &[u8]) -> IncomingNotification {
    match notification::parse(body) {
        Ok(notification) => from_notification(notification),
        Err(malformed) => from_malformed(body, malformed),
    }
}

fn from_notification(notification: Notification) -> IncomingNotification {
    let host = notification.event.host().map(str::to_owned);
    let instance_uuid = notification.event.instance_uuid().map(str::to_owned);
    let (status, compute_service) = match &notification.event {
        Event::ServiceUpdate(update) => {
            let mirrored = (update.binary == COMPUTE_BINARY).then(|| ComputeServiceUpdate {
                host: update.host.clone(),
                service_id: update.uuid.clone(),
                disabled: update.disabled,
                disabled_reason: update.disabled_reason.clone(),
                forced_down: update.forced_down,
                last_seen_up: update.last_seen_up.clone(),
                sent_at: Some(notification.timestamp.clone()),
            });
            (NotificationStatus::Recorded, mirrored)
        }
        Event::Instance(_) | Event::ComputeException(_) => (NotificationStatus::Recorded, None),
        Event::Other => (NotificationStatus::Unknown, None),
    };
    IncomingNotification {
        message_id: notification.message_id,
        event_type: notification.event_type,
        publisher_id: Some(notification.publisher_id),
        priority: Some(notification.priority),
        host,
        instance_uuid,
        payload: notification.payload,
        status,
        error: None,
        compute_service,
    }
}

fn from_malformed(body: &[u8], malformed: Malformed) -> IncomingNotification {
    IncomingNotification {
        message_id: malformed.message_id.unwrap_or_else(|| notification::body_key(body)),
        event_type: malformed.event_type.unwrap_or_default(),
        publisher_id: malformed.publisher_id,
        priority: malformed.priority,
        host: None,
        instance_uuid: None,
        // Kept as received (a body that is not UTF-8 is kept with U+FFFD for what is not).
        payload: String::from_utf8_lossy(body).into_owned(),
        status: NotificationStatus::Malformed,
        error: Some(malformed.reason),
        compute_service: None,
    }
}

/// Records parsed rows in one transaction and counts the outcome.
pub async fn record_prepared(
    db: &DatabaseConnection,
    actor: &str,
    rows: &[IncomingNotification],
    counters: &Counters,
) -> Result<RecordOutcome, aos_db::DbError> {
    let started = Instant::now();
    let outcome = aos_db::record_notifications(db, actor, rows).await;
    Counters::add_time(&counters.record_nanos, started.elapsed());
    let outcome = outcome?;
    counters.count_outcome(&outcome);
    Ok(outcome)
}

/// The whole step for one batch of bodies: parse, record in one transaction, count.
pub async fn record_batch(
    db: &DatabaseConnection,
    actor: &str,
    bodies: &[Vec<u8>],
    counters: &Counters,
) -> Result<RecordOutcome, aos_db::DbError> {
    let started = Instant::now();
    let rows = prepare(bodies);
    Counters::add_time(&counters.parse_nanos, started.elapsed());
    record_prepared(db, actor, &rows, counters).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    #[test]
    fn a_compute_service_update_is_mirrored_and_other_binaries_are_not() {
        let row = incoming(&samples::body("service.update.json").unwrap());
        assert_eq!(row.status, NotificationStatus::Recorded);
        assert_eq!(row.host.as_deref(), Some("fake-3"));
        let mirrored = row.compute_service.expect("nova-compute is mirrored");
        assert!(mirrored.forced_down);
        assert_eq!(mirrored.service_id.as_deref(), Some("a6f7e897-b752-45a2-b12a-5c26bec03f17"));

        let mut message = samples::message("service.update.json").unwrap();
        message["payload"]["nova_object.data"]["binary"] = "nova-scheduler".into();
        let row = incoming(&samples::envelope(&message));
        assert_eq!(row.status, NotificationStatus::Recorded);
        assert_eq!(row.compute_service, None);
    }

    #[test]
    fn a_malformed_body_is_kept_as_received_under_its_hash() {
        let row = incoming(b"not json");
        assert_eq!(row.status, NotificationStatus::Malformed);
        assert_eq!(row.message_id, notification::body_key(b"not json"));
        assert_eq!(row.payload, "not json");
        assert!(row.error.is_some_and(|error| error.starts_with("body is not JSON")));
    }

    #[test]
    fn rows_carry_the_instance_and_its_host() {
        let row = incoming(&samples::body("instance.evacuate.json").unwrap());
        assert_eq!(row.status, NotificationStatus::Recorded);
        assert_eq!(row.event_type, "instance.evacuate");
        assert_eq!(row.host.as_deref(), Some("fake-3"));
        assert_eq!(row.instance_uuid.as_deref(), Some("7c609ebd-4b31-456e-940e-b147717a90ba"));
        assert_eq!(row.publisher_id.as_deref(), Some("nova-api:vm"));
        let other = incoming(&samples::body("scheduler.select_destinations.end.json").unwrap());
        assert_eq!(other.status, NotificationStatus::Unknown);
    }
}
