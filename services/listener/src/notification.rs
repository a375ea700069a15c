//! Nova's versioned notifications, parsed: pure functions over the bytes of one AMQP body, no
//! I/O.
//!
//! On the wire (oslo.messaging, notification driver `messagingv2`) a body is an envelope
//! `{"oslo.version": "2.0", "oslo.message": "<the message as a JSON string>"}`, so every
//! message is decoded twice. The message carries `message_id`, `publisher_id`
//! (`nova-compute:fake-1`), `event_type`, `priority`, `timestamp`, the `payload`, and the
//! request context as `_context_*` keys, which are skipped (they include the caller's
//! Keystone token: never stored). A versioned payload is `{"nova_object.name": …,
//! "nova_object.data": {…}, …}`.
//!
//! [`parse`] gives a [`Notification`] with a typed [`Event`] for the types the suite acts on
//! (`service.update`, `instance.*`, `compute.exception`) and [`Event::Other`] for any other
//! well-formed message (including unversioned, legacy ones); what cannot be read is
//! [`Malformed`], with whatever header fields could be read before the problem.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

/// One well-formed notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub message_id: String,
    /// `<binary>:<host>` of the sender, e.g. `nova-compute:fake-1`, `nova-api:ctl1`.
    pub publisher_id: String,
    pub event_type: String,
    /// `INFO`, `ERROR`, … (oslo's priority, upper case as Nova sends it).
    pub priority: String,
    /// When Nova sent it, as Nova wrote it (`2026-11-23 11:23:11.210423`, UTC).
    pub timestamp: String,
    /// The payload as it appeared in the message (JSON text), kept as received.
    pub payload: String,
    pub event: Event,
}

/// What a notification means to the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `service.update`: a service record changed (start, disable, forced down).
    ServiceUpdate(ServiceUpdate),
    /// `instance.*`: create, delete, update, evacuate, live migration, resize, rebuild,
    /// power on/off, shutdown, exists, …
    Instance(InstanceEvent),
    /// `compute.exception`: an operation on a compute host raised.
    ComputeException(ComputeException),
    /// Well-formed, but not a type the suite acts on (kept as `unknown`).
    Other,
}

/// Nova's `ServiceStatusPayload`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServiceUpdate {
    pub host: String,
    /// `nova-compute`, `nova-scheduler`, `nova-conductor`, …
    pub binary: String,
    #[serde(default)]
    pub topic: Option<String>,
    pub disabled: bool,
    #[serde(default)]
    pub disabled_reason: Option<String>,
    pub forced_down: bool,
    /// The service's last heartbeat (`2026-11-23T11:23:01Z`). Whether the service is up is
    /// not in the payload: Nova's API derives it from this and `service_down_time`, and it
    /// reports a forced-down service as down.
    #[serde(default)]
    pub last_seen_up: Option<String>,
    #[serde(default)]
    pub report_count: Option<i64>,
    /// The service's UUID (payload version 1.1 and later).
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub availability_zone: Option<String>,
}

/// The fields of Nova's instance payloads (`InstanceActionPayload`, `InstanceUpdatePayload`,
/// …) the suite reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEvent {
    pub event_type: String,
    pub instance_uuid: String,
    /// The compute host the instance is on (payload `host`); when the payload has none yet
    /// (`instance.create.start`, sent by the compute building it before the instance is
    /// assigned), the compute that sent it (`nova-compute:<host>`). None while scheduling.
    pub host: Option<String>,
    pub node: Option<String>,
    /// vm_state: `building`, `active`, `stopped`, `error`, `deleted`, …
    pub state: Option<String>,
    /// `scheduling`, `rebuilding`, `migrating`, `deleting`, …
    pub task_state: Option<String>,
    /// `pending`, `running`, `shutdown`, …
    pub power_state: Option<String>,
    /// `instance.update` only: the state before this update.
    pub old_state: Option<String>,
    pub old_task_state: Option<String>,
    /// The exception of a failed action (`instance.*.error`), when there is one.
    pub fault: Option<String>,
}

/// Nova's `ExceptionPayload` of `compute.exception`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeException {
    /// The compute host, from `publisher_id` (`nova-compute:<host>`).
    pub host: Option<String>,
    pub exception: String,
    pub exception_message: Option<String>,
    pub function_name: Option<String>,
    pub module_name: Option<String>,
}

/// A body that is not a readable notification. Kept as received with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub reason: String,
    /// Header fields that could be read before the problem (all `None` when the body is
    /// not even an envelope).
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub publisher_id: Option<String>,
    pub priority: Option<String>,
}

impl Malformed {
    fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), message_id: None, event_type: None, publisher_id: None, priority: None }
    }
}

/// The longest `message_id` kept as the message's identity (the column's width); a longer
/// one makes the message malformed rather than cut (two cut ids could collide).
pub const MESSAGE_ID_MAX_LEN: usize = aos_db::notification_limits::MESSAGE_ID;

/// The identity under which a body without a usable `message_id` is recorded: a hash of the
/// body, so a redelivery of the same bytes is recorded once.
pub fn body_key(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(24).map(|byte| format!("{byte:02x}")).collect();
    format!("malformed-{hex}")
}

impl Event {
    /// The compute host the event is about, when it names one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Event::ServiceUpdate(update) => Some(&update.host),
            Event::Instance(instance) => instance.host.as_deref(),
            Event::ComputeException(exception) => exception.host.as_deref(),
            Event::Other => None,
        }
    }

    pub fn instance_uuid(&self) -> Option<&str> {
        match self {
            Event::Instance(instance) => Some(&instance.instance_uuid),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "oslo.version")]
    version: Option<String>,
    #[serde(rename = "oslo.message")]
    message: Option<String>,
}

/// The message inside the envelope. Every field is optional here so that a missing one is
/// reported by name with the others still read.
#[derive(Deserialize)]
struct Message<'a> {
    message_id: Option<String>,
    publisher_id: Option<String>,
    event_type: Option<String>,
    priority: Option<String>,
    timestamp: Option<String>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Versioned<T> {
    #[serde(rename = "nova_object.data")]
    data: T,
}

#[derive(Deserialize)]
struct InstancePayload {
    uuid: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    task_state: Option<String>,
    #[serde(default)]
    power_state: Option<String>,
    #[serde(default)]
    state_update: Option<Versioned<StateUpdatePayload>>,
    #[serde(default)]
    fault: Option<Versioned<FaultPayload>>,
}

#[derive(Deserialize)]
struct StateUpdatePayload {
    #[serde(default)]
    old_state: Option<String>,
    #[serde(default)]
    old_task_state: Option<String>,
}

#[derive(Deserialize)]
struct FaultPayload {
    #[serde(default)]
    exception: Option<String>,
    #[serde(default)]
    exception_message: Option<String>,
}

#[derive(Deserialize)]
struct ExceptionPayload {
    exception: String,
    #[serde(default)]
    exception_message: Option<String>,
    #[serde(default)]
    function_name: Option<String>,
    #[serde(default)]
    module_name: Option<String>,
}

/// Parses one AMQP body.
pub fn parse(body: &[u8]) -> Result<Notification, Malformed> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|error| {
        Malformed::new(if error.is_data() {
            format!("not an oslo envelope: {error}")
        } else {
            format!("body is not JSON: {error}")
        })
    })?;
    let (Some(version), Some(text)) = (envelope.version, envelope.message) else {
        return Err(Malformed::new("not an oslo envelope: oslo.version and oslo.message are required"));
    };
    if !version.starts_with("2.") {
        return Err(Malformed::new(format!("unsupported oslo.version {version:?} (2.x expected)")));
    }
    let message: Message<'_> = serde_json::from_str(&text)
        .map_err(|error| Malformed::new(format!("oslo.message is not a message: {error}")))?;
    let mut malformed = Malformed {
        reason: String::new(),
        message_id: message.message_id.clone(),
        event_type: message.event_type.clone(),
        publisher_id: message.publisher_id.clone(),
        priority: message.priority.clone(),
    };
    let missing: Vec<&str> = [
        ("message_id", message.message_id.is_none()),
        ("publisher_id", message.publisher_id.is_none()),
        ("event_type", message.event_type.is_none()),
        ("priority", message.priority.is_none()),
        ("timestamp", message.timestamp.is_none()),
        ("payload", message.payload.is_none()),
    ]
    .into_iter()
    .filter_map(|(field, absent)| absent.then_some(field))
    .collect();
    let (Some(message_id), Some(publisher_id), Some(event_type), Some(priority), Some(timestamp), Some(payload)) = (
        message.message_id,
        message.publisher_id,
        message.event_type,
        message.priority,
        message.timestamp,
        message.payload,
    ) else {
        malformed.reason = format!("message without {}", missing.join(", "));
        return Err(malformed);
    };
    if message_id.is_empty() || message_id.chars().count() > MESSAGE_ID_MAX_LEN {
        malformed.message_id = None;
        malformed.reason = format!("message_id must be 1 to {MESSAGE_ID_MAX_LEN} characters");
        return Err(malformed);
    }
    let event = match parse_event(&event_type, &publisher_id, payload) {
        Ok(event) => event,
        Err(reason) => {
            malformed.reason = format!("{event_type} payload: {reason}");
            return Err(malformed);
        }
    };
    Ok(Notification {
        message_id,
        publisher_id,
        event_type,
        priority,
        timestamp,
        payload: payload.get().to_owned(),
        event,
    })
}

fn parse_event(event_type: &str, publisher_id: &str, payload: &RawValue) -> Result<Event, String> {
    if event_type == "service.update" {
        let update: Versioned<ServiceUpdate> = typed(payload)?;
        return Ok(Event::ServiceUpdate(update.data));
    }
    if event_type == "compute.exception" {
        let exception: Versioned<ExceptionPayload> = typed(payload)?;
        let exception = exception.data;
        return Ok(Event::ComputeException(ComputeException {
            host: publisher_id.strip_prefix("nova-compute:").map(str::to_owned),
            exception: exception.exception,
            exception_message: exception.exception_message,
            function_name: exception.function_name,
            module_name: exception.module_name,
        }));
    }
    if event_type.starts_with("instance.") {
        let instance: Versioned<InstancePayload> = typed(payload)?;
        let instance = instance.data;
        let (old_state, old_task_state) =
            instance.state_update.map(|update| (update.data.old_state, update.data.old_task_state)).unwrap_or_default();
        let fault = instance.fault.map(|fault| {
            let fault = fault.data;
            match (fault.exception, fault.exception_message) {
                (Some(exception), Some(message)) if !message.is_empty() => format!("{exception}: {message}"),
                (Some(exception), _) => exception,
                (None, message) => message.unwrap_or_default(),
            }
        });
        return Ok(Event::Instance(InstanceEvent {
            event_type: event_type.to_owned(),
            instance_uuid: instance.uuid,
            host: instance.host.or_else(|| publisher_id.strip_prefix("nova-compute:").map(str::to_owned)),
            node: instance.node,
            state: instance.state,
            task_state: instance.task_state,
            power_state: instance.power_state,
            old_state,
            old_task_state,
            fault,
        }));
    }
    // Any other type (versioned or legacy): nothing to read, but a payload that is not an
    // object is not something Nova sends.
    if !payload.get().starts_with('{') {
        return Err("payload is not a JSON object".to_owned());
    }
    Ok(Event::Other)
}

fn typed<T: serde::de::DeserializeOwned>(payload: &RawValue) -> Result<T, String> {
    serde_json::from_str(payload.get()).map_err(|error| {
        if error.to_string().contains("nova_object.data") {
            format!("not a versioned payload ({error})")
        } else {
            error.to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    fn parse_sample(file: &str) -> Notification {
        let body = samples::body(file).unwrap_or_else(|error| panic!("{file}: {error}"));
        parse(&body).unwrap_or_else(|malformed| panic!("{file}: {malformed:?}"))
    }

    #[test]
    fn every_real_versioned_sample_parses_into_its_typed_event() {
        let files = samples::VERSIONED;
        assert_eq!(files.len(), 30, "every file of samples/versioned is listed");
        for (file, _) in files {
            let notification = parse_sample(file);
            let expected_type = file.trim_end_matches(".json");
            assert_eq!(notification.event_type, expected_type, "{file}");
            assert!(!notification.message_id.is_empty());
            assert!(notification.payload.starts_with('{'), "{file}: payload kept as JSON text");
            match (&notification.event, expected_type) {
                (Event::ServiceUpdate(_), "service.update") => {}
                (Event::ComputeException(_), "compute.exception") => {}
                (Event::Instance(instance), kind) if kind.starts_with("instance.") => {
                    assert_eq!(instance.event_type, kind);
                    assert_eq!(instance.instance_uuid.len(), 36, "{file}");
                }
                (Event::Other, kind) if kind.starts_with("scheduler.") => {}
                (event, kind) => panic!("{file}: {kind} parsed as {event:?}"),
            }
        }
    }

    #[test]
    fn every_real_legacy_sample_is_well_formed_but_not_acted_on() {
        for (file, _) in samples::LEGACY {
            let notification = parse_sample(file);
            assert_eq!(notification.event, Event::Other, "{file}");
        }
    }

    #[test]
    fn service_update_carries_novas_service_fields() {
        let notification = parse_sample("service.update.json");
        assert_eq!(notification.message_id, "bb92dfbb-1fdc-4567-ba06-3dd9083e27b4");
        assert_eq!(notification.publisher_id, "nova-compute:fake-3");
        assert_eq!(notification.priority, "INFO");
        assert_eq!(notification.timestamp, "2026-11-23 11:23:11.210423");
        let Event::ServiceUpdate(update) = notification.event else { panic!("{:?}", notification.event) };
        assert_eq!(update.host, "fake-3");
        assert_eq!(update.binary, "nova-compute");
        assert!(!update.disabled);
        assert_eq!(update.disabled_reason, None);
        assert!(update.forced_down);
        assert_eq!(update.last_seen_up.as_deref(), Some("2026-11-23T11:23:01Z"));
        assert_eq!(update.uuid.as_deref(), Some("a6f7e897-b752-45a2-b12a-5c26bec03f17"));
        assert_eq!(update.report_count, Some(577));
    }

    #[test]
    fn instance_events_carry_host_and_states() {
        let update = parse_sample("instance.update.json");
        let Event::Instance(instance) = &update.event else { panic!("{:?}", update.event) };
        assert_eq!(instance.instance_uuid, "c34b127d-0ae8-4521-ae01-26fcc59dccc3");
        assert_eq!(instance.host, None, "not on a host while scheduling");
        assert_eq!(instance.state.as_deref(), Some("building"));
        assert_eq!(instance.task_state.as_deref(), Some("scheduling"));
        assert_eq!(instance.power_state.as_deref(), Some("pending"));
        assert_eq!(instance.old_state.as_deref(), Some("building"));

        let evacuate = parse_sample("instance.evacuate.json");
        let Event::Instance(instance) = &evacuate.event else { panic!("{:?}", evacuate.event) };
        assert_eq!(instance.host.as_deref(), Some("fake-3"));
        assert_eq!(instance.task_state.as_deref(), Some("rebuilding"));
        assert_eq!(instance.fault, None);
        assert_eq!(evacuate.event.host(), Some("fake-3"));
        assert_eq!(evacuate.event.instance_uuid(), Some("7c609ebd-4b31-456e-940e-b147717a90ba"));

        // Sent by the compute building the instance, before Nova assigns it a host.
        let create = parse_sample("instance.create.start.json");
        assert_eq!(create.event.host(), Some("fake-1"), "the sending compute");
        // The payload's host wins over the sender (the destination sends pre-live-migration).
        let pre = parse_sample("instance.live_migration_pre.start.json");
        assert_eq!(pre.event.host(), Some("fake-2"));
    }

    #[test]
    fn compute_exception_names_the_compute_host_and_the_exception() {
        let notification = parse_sample("compute.exception.json");
        assert_eq!(notification.priority, "ERROR");
        let Event::ComputeException(exception) = notification.event else { panic!("{:?}", notification.event) };
        assert_eq!(exception.host.as_deref(), Some("fake-4"));
        assert_eq!(exception.exception, "NotImplementedError");
        assert_eq!(exception.function_name.as_deref(), Some("get_host_uptime"));
    }

    #[test]
    fn the_request_context_and_its_token_are_not_kept() {
        let mut message = samples::message("instance.update.json").unwrap();
        message["_context_auth_token"] = "gAAAAAB-secret-token".into();
        let notification = parse(&samples::envelope(&message)).unwrap();
        assert!(!notification.payload.contains("secret-token"));
        assert!(!notification.payload.contains("_context_"));
    }

    fn reason(body: &[u8]) -> Malformed {
        match parse(body) {
            Ok(notification) => panic!("parsed {notification:?}"),
            Err(malformed) => malformed,
        }
    }

    #[test]
    fn bodies_that_are_not_envelopes_are_malformed_without_an_identity() {
        for (body, expected) in [
            (&b"not json at all"[..], "body is not JSON"),
            (b"", "body is not JSON"),
            (b"\xff\xfe", "body is not JSON"),
            (b"[1, 2]", "not an oslo envelope"),
            (b"{\"event_type\": \"service.update\"}", "not an oslo envelope"),
            (b"{\"oslo.version\": \"2.0\"}", "not an oslo envelope"),
            (b"{\"oslo.version\": \"2.0\", \"oslo.message\": {\"a\": 1}}", "not an oslo envelope"),
            (b"{\"oslo.version\": \"1.0\", \"oslo.message\": \"{}\"}", "unsupported oslo.version"),
            (b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"not json\"}", "oslo.message is not a message"),
            (b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"[]\"}", "oslo.message is not a message"),
        ] {
            let malformed = reason(body);
            assert!(malformed.reason.starts_with(expected), "{body:?}: {}", malformed.reason);
            assert_eq!(malformed.message_id, None);
        }
    }

    #[test]
    fn a_message_missing_fields_names_them_and_keeps_what_it_has() {
        let mut message = samples::message("service.update.json").unwrap();
        let object = message.as_object_mut().unwrap();
        object.remove("priority");
        object.remove("timestamp");
        let malformed = reason(&samples::envelope(&message));
        assert_eq!(malformed.reason, "message without priority, timestamp");
        assert_eq!(malformed.message_id.as_deref(), Some("bb92dfbb-1fdc-4567-ba06-3dd9083e27b4"));
        assert_eq!(malformed.event_type.as_deref(), Some("service.update"));
    }

    #[test]
    fn a_known_event_with_a_payload_that_is_not_novas_is_malformed_with_its_identity() {
        let mut message = samples::message("service.update.json").unwrap();
        message["payload"]["nova_object.data"].as_object_mut().unwrap().remove("forced_down");
        let malformed = reason(&samples::envelope(&message));
        assert!(
            malformed.reason.starts_with("service.update payload: missing field `forced_down`"),
            "{}",
            malformed.reason
        );
        assert_eq!(malformed.message_id.as_deref(), Some("bb92dfbb-1fdc-4567-ba06-3dd9083e27b4"));

        let mut message = samples::message("instance.update.json").unwrap();
        message["payload"] = serde_json::json!({"uuid": "x"});
        let malformed = reason(&samples::envelope(&message));
        assert!(malformed.reason.contains("not a versioned payload"), "{}", malformed.reason);
    }

    #[test]
    fn a_message_id_too_long_to_be_an_identity_is_malformed() {
        let mut message = samples::message("service.update.json").unwrap();
        message["message_id"] = "x".repeat(MESSAGE_ID_MAX_LEN + 1).into();
        let malformed = reason(&samples::envelope(&message));
        assert_eq!(malformed.message_id, None, "the body hash identifies it instead");
        message["message_id"] = "x".repeat(MESSAGE_ID_MAX_LEN).into();
        assert!(parse(&samples::envelope(&message)).is_ok());
    }

    #[test]
    fn an_unknown_event_type_is_well_formed_and_other() {
        let mut message = samples::message("service.update.json").unwrap();
        message["event_type"] = "aggregate.cache_images.progress".into();
        let notification = parse(&samples::envelope(&message)).unwrap();
        assert_eq!(notification.event, Event::Other);
        message["payload"] = "a string".into();
        assert!(parse(&samples::envelope(&message)).is_err());
    }

    #[test]
    fn the_body_key_is_stable_and_fits_the_message_id_column() {
        let key = body_key(b"not json");
        assert_eq!(key, body_key(b"not json"));
        assert_ne!(key, body_key(b"not json!"));
        assert!(key.len() <= MESSAGE_ID_MAX_LEN, "{key}");
    }
}
