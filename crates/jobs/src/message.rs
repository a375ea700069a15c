//! What travels on the queue: a [`JobMessage`] naming one task by its [`TaskId`], and
//! nothing else. The `tasks` row is the source of truth (kind, payload, state, attempts);
//! a message only says "look at this task", so a duplicate or stale message is harmless.
//!
//! Also owns the codec the workers decode deliveries with ([`TolerantJsonCodec`]): apalis
//! treats a body it cannot decode as a backend failure and stops the worker, leaving the
//! message unacknowledged, so one malformed message would stall every worker that received
//! it. Decoding into [`Inbound`] never fails; a malformed body becomes
//! [`Inbound::Malformed`] and is dead-lettered by the runner.

use std::fmt;
use std::str::FromStr;

use apalis::prelude::Codec;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The identity of a task: the UUID stored (as text) in `tasks.id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh random id for a new task.
    pub fn new_random() -> Self {
        TaskId(Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for TaskId {
    fn from(uuid: Uuid) -> Self {
        TaskId(uuid)
    }
}

impl fmt::Display for TaskId {
    /// The hyphenated lowercase form, exactly as stored in `tasks.id`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(TaskId)
    }
}

/// The body of every queue message, as JSON: `{"task_id": "<uuid>"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub task_id: TaskId,
}

impl JobMessage {
    pub fn new(task_id: TaskId) -> Self {
        JobMessage { task_id }
    }

    /// The wire form (what apalis' JSON codec would produce for the same value).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of one UUID cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A delivery as the runner sees it: a job, or a body that is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    Job(JobMessage),
    /// The body did not decode; `reason` is the decoder's message (the body itself is not
    /// kept: it may be large or binary).
    Malformed {
        reason: String,
    },
}

/// apalis' JSON codec, except that decoding never fails (see the module header).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TolerantJsonCodec;

impl Codec<Inbound> for TolerantJsonCodec {
    type Error = serde_json::Error;
    type Compact = Vec<u8>;

    fn encode(&self, value: &Inbound) -> Result<Vec<u8>, Self::Error> {
        match value {
            Inbound::Job(message) => serde_json::to_vec(message),
            Inbound::Malformed { reason } => Err(<serde_json::Error as serde::ser::Error>::custom(format!(
                "cannot re-encode a malformed message ({reason})"
            ))),
        }
    }

    fn decode(&self, bytes: &Vec<u8>) -> Result<Inbound, Self::Error> {
        Ok(match serde_json::from_slice::<JobMessage>(bytes) {
            Ok(message) => Inbound::Job(message),
            Err(error) => Inbound::Malformed { reason: error.to_string() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_message_is_json_with_the_task_id_as_hyphenated_text() {
        let task_id: TaskId = "6f1c1a2e-8a55-4d8e-9a47-0a6f1bb0c9d1".parse().unwrap();
        let bytes = JobMessage::new(task_id).to_bytes();
        assert_eq!(String::from_utf8(bytes).unwrap(), r#"{"task_id":"6f1c1a2e-8a55-4d8e-9a47-0a6f1bb0c9d1"}"#);
        assert_eq!(task_id.to_string(), "6f1c1a2e-8a55-4d8e-9a47-0a6f1bb0c9d1");
    }

    #[test]
    fn the_tolerant_codec_turns_garbage_into_a_malformed_delivery_instead_of_an_error() {
        let codec = TolerantJsonCodec;
        let task_id = TaskId::new_random();
        assert_eq!(codec.decode(&JobMessage::new(task_id).to_bytes()).unwrap(), Inbound::Job(JobMessage::new(task_id)));
        for garbage in [&b"not json"[..], br#"{"task_id": 7}"#, br#"{"task":"x"}"#, b""] {
            assert!(matches!(codec.decode(&garbage.to_vec()).unwrap(), Inbound::Malformed { .. }), "{garbage:?}");
        }
    }
}
