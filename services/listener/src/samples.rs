//! Real notifications captured from the test cloud (`samples/`, copied from
//! `openstack-env/samples` with auth tokens redacted; `samples/event_counts.txt` has how often
//! each type occurred in the scenario they came from). Each file holds the decoded message
//! under `message` and the routing key it arrived with; [`body`] wraps a sample in the oslo
//! envelope exactly as it travels on the bus.
//!
//! For the parser's unit tests, the listener's integration tests and the benchmark
//! (feature `samples`); not compiled into the daemon.

use serde_json::Value;

/// `samples/versioned/*.json`: (file name, contents).
pub const VERSIONED: &[(&str, &str)] = &[
    ("compute.exception.json", include_str!("../samples/versioned/compute.exception.json")),
    ("instance.create.end.json", include_str!("../samples/versioned/instance.create.end.json")),
    ("instance.create.start.json", include_str!("../samples/versioned/instance.create.start.json")),
    ("instance.delete.end.json", include_str!("../samples/versioned/instance.delete.end.json")),
    ("instance.delete.start.json", include_str!("../samples/versioned/instance.delete.start.json")),
    ("instance.evacuate.json", include_str!("../samples/versioned/instance.evacuate.json")),
    ("instance.exists.json", include_str!("../samples/versioned/instance.exists.json")),
    (
        "instance.live_migration_post.end.json",
        include_str!("../samples/versioned/instance.live_migration_post.end.json"),
    ),
    (
        "instance.live_migration_post.start.json",
        include_str!("../samples/versioned/instance.live_migration_post.start.json"),
    ),
    (
        "instance.live_migration_post_dest.end.json",
        include_str!("../samples/versioned/instance.live_migration_post_dest.end.json"),
    ),
    (
        "instance.live_migration_post_dest.start.json",
        include_str!("../samples/versioned/instance.live_migration_post_dest.start.json"),
    ),
    ("instance.live_migration_pre.end.json", include_str!("../samples/versioned/instance.live_migration_pre.end.json")),
    (
        "instance.live_migration_pre.start.json",
        include_str!("../samples/versioned/instance.live_migration_pre.start.json"),
    ),
    ("instance.rebuild.end.json", include_str!("../samples/versioned/instance.rebuild.end.json")),
    ("instance.rebuild.start.json", include_str!("../samples/versioned/instance.rebuild.start.json")),
    ("instance.rebuild_scheduled.json", include_str!("../samples/versioned/instance.rebuild_scheduled.json")),
    ("instance.resize.end.json", include_str!("../samples/versioned/instance.resize.end.json")),
    ("instance.resize.start.json", include_str!("../samples/versioned/instance.resize.start.json")),
    ("instance.resize_confirm.end.json", include_str!("../samples/versioned/instance.resize_confirm.end.json")),
    ("instance.resize_confirm.start.json", include_str!("../samples/versioned/instance.resize_confirm.start.json")),
    ("instance.resize_finish.end.json", include_str!("../samples/versioned/instance.resize_finish.end.json")),
    ("instance.resize_finish.start.json", include_str!("../samples/versioned/instance.resize_finish.start.json")),
    ("instance.resize_prep.end.json", include_str!("../samples/versioned/instance.resize_prep.end.json")),
    ("instance.resize_prep.start.json", include_str!("../samples/versioned/instance.resize_prep.start.json")),
    ("instance.shutdown.end.json", include_str!("../samples/versioned/instance.shutdown.end.json")),
    ("instance.shutdown.start.json", include_str!("../samples/versioned/instance.shutdown.start.json")),
    ("instance.update.json", include_str!("../samples/versioned/instance.update.json")),
    (
        "scheduler.select_destinations.end.json",
        include_str!("../samples/versioned/scheduler.select_destinations.end.json"),
    ),
    (
        "scheduler.select_destinations.start.json",
        include_str!("../samples/versioned/scheduler.select_destinations.start.json"),
    ),
    ("service.update.json", include_str!("../samples/versioned/service.update.json")),
];

/// `samples/legacy/*.json` (unversioned notifications, which the listener does not bind to).
pub const LEGACY: &[(&str, &str)] = &[
    ("compute.instance.create.end.json", include_str!("../samples/legacy/compute.instance.create.end.json")),
    ("compute.instance.delete.end.json", include_str!("../samples/legacy/compute.instance.delete.end.json")),
    ("compute.instance.evacuate.json", include_str!("../samples/legacy/compute.instance.evacuate.json")),
    ("compute.instance.exists.json", include_str!("../samples/legacy/compute.instance.exists.json")),
    (
        "compute.instance.live_migration._post.end.json",
        include_str!("../samples/legacy/compute.instance.live_migration._post.end.json"),
    ),
    (
        "compute.instance.live_migration._post.start.json",
        include_str!("../samples/legacy/compute.instance.live_migration._post.start.json"),
    ),
    (
        "compute.instance.live_migration.post.dest.end.json",
        include_str!("../samples/legacy/compute.instance.live_migration.post.dest.end.json"),
    ),
    (
        "compute.instance.live_migration.post.dest.start.json",
        include_str!("../samples/legacy/compute.instance.live_migration.post.dest.start.json"),
    ),
    (
        "compute.instance.live_migration.pre.end.json",
        include_str!("../samples/legacy/compute.instance.live_migration.pre.end.json"),
    ),
    (
        "compute.instance.live_migration.pre.start.json",
        include_str!("../samples/legacy/compute.instance.live_migration.pre.start.json"),
    ),
    ("compute.instance.rebuild.end.json", include_str!("../samples/legacy/compute.instance.rebuild.end.json")),
    (
        "compute.instance.rebuild.scheduled.json",
        include_str!("../samples/legacy/compute.instance.rebuild.scheduled.json"),
    ),
    ("compute.instance.rebuild.start.json", include_str!("../samples/legacy/compute.instance.rebuild.start.json")),
    ("compute.instance.update.json", include_str!("../samples/legacy/compute.instance.update.json")),
    ("get_host_uptime.error.json", include_str!("../samples/legacy/get_host_uptime.error.json")),
];

/// How often each versioned event type occurred in the captured scenario
/// (`samples/event_counts.txt`): a realistic mix for load tests.
pub const EVENT_COUNTS: &str = include_str!("../samples/event_counts.txt");

fn contents(file: &str) -> Result<&'static str, String> {
    VERSIONED
        .iter()
        .chain(LEGACY)
        .find(|(name, _)| *name == file)
        .map(|(_, text)| *text)
        .ok_or_else(|| format!("no sample named {file}"))
}

/// The decoded message of sample `file` (`_context_*`, `event_type`, `message_id`, `payload`,
/// …).
pub fn message(file: &str) -> Result<Value, String> {
    let sample: Value = serde_json::from_str(contents(file)?).map_err(|error| format!("{file}: {error}"))?;
    sample.get("message").cloned().ok_or_else(|| format!("{file} has no message"))
}

/// The routing key sample `file` was published with (`versioned_notifications.info`, …).
pub fn routing_key(file: &str) -> Result<String, String> {
    let sample: Value = serde_json::from_str(contents(file)?).map_err(|error| format!("{file}: {error}"))?;
    sample
        .get("routing_key")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{file} has no routing_key"))
}

/// `message` in the oslo.messaging v2 envelope: the AMQP body Nova publishes.
pub fn envelope(message: &Value) -> Vec<u8> {
    let inner = message.to_string();
    serde_json::json!({"oslo.version": "2.0", "oslo.message": inner}).to_string().into_bytes()
}

/// The AMQP body of sample `file`, as Nova published it.
pub fn body(file: &str) -> Result<Vec<u8>, String> {
    Ok(envelope(&message(file)?))
}

/// The AMQP body of sample `file` with its `message_id` replaced (many distinct messages from
/// one sample).
pub fn body_with_message_id(file: &str, message_id: &str) -> Result<Vec<u8>, String> {
    let mut message = message(file)?;
    message["message_id"] = Value::String(message_id.to_owned());
    Ok(envelope(&message))
}

/// The versioned event types with their counts from [`EVENT_COUNTS`], matched to a sample
/// file: (file name, count). Types without a sample of their own are left out.
pub fn versioned_mix() -> Vec<(&'static str, u32)> {
    EVENT_COUNTS
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "versioned").then_some(())?;
            let event_type = words.next()?;
            let count: u32 = line.split_whitespace().last()?.parse().ok()?;
            let file = VERSIONED.iter().find(|(name, _)| name.trim_end_matches(".json") == event_type)?.0;
            Some((file, count))
        })
        .collect()
}

/// Makes many distinct notifications from the samples: the real bodies with fresh
/// `message_id`s, in the proportions of [`versioned_mix`] (one `service.update` in about 190
/// messages, `instance.update` about half of them).
pub struct Generator {
    /// One entry per occurrence in the mix: (routing key, decoded message).
    templates: Vec<(String, Value)>,
}

impl Generator {
    pub fn versioned_mix() -> Result<Self, String> {
        let mut templates = Vec::new();
        for (file, count) in versioned_mix() {
            let message = message(file)?;
            let routing_key = routing_key(file)?;
            for _ in 0..count {
                templates.push((routing_key.clone(), message.clone()));
            }
        }
        // Interleave types rather than sending 204 `instance.update`s in a row.
        let step = 7;
        let mut interleaved = Vec::with_capacity(templates.len());
        for start in 0..step {
            interleaved.extend(templates.iter().skip(start).step_by(step).cloned());
        }
        Ok(Self { templates: interleaved })
    }

    /// Message number `index` of the endless sequence, with `message_id`: (routing key,
    /// AMQP body).
    pub fn message(&self, index: usize, message_id: &str) -> (&str, Vec<u8>) {
        let (routing_key, template) = &self.templates[index % self.templates.len()];
        let mut message = template.clone();
        message["message_id"] = Value::String(message_id.to_owned());
        (routing_key, envelope(&message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_every_versioned_sample() {
        let mix = versioned_mix();
        assert_eq!(mix.len(), VERSIONED.len(), "{mix:?}");
        assert!(mix.iter().all(|(_, count)| *count > 0));
    }

    #[test]
    fn generated_messages_are_real_samples_with_the_given_message_id() {
        let generator = Generator::versioned_mix().unwrap();
        let total: u32 = versioned_mix().iter().map(|(_, count)| count).sum();
        assert_eq!(generator.templates.len(), total as usize);
        let (routing_key, body) = generator.message(3, "generated-3");
        assert!(routing_key.starts_with("versioned_notifications."));
        let notification = crate::notification::parse(&body).unwrap();
        assert_eq!(notification.message_id, "generated-3");
    }
}
