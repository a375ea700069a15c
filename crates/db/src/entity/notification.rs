//! `notifications`: Nova's versioned notifications as received, recorded exactly once per
//! oslo.messaging `message_id` (a redelivery hits the unique index and changes nothing).
//! Malformed messages are kept too, with the reason, so nothing received is lost.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub message_id: String,
    /// e.g. `service.update`, `instance.evacuate.end`.
    pub event_type: String,
    pub publisher_id: Option<String>,
    pub priority: Option<String>,
    /// The compute host the notification is about, when it names one.
    pub host: Option<String>,
    pub instance_uuid: Option<String>,
    /// The raw payload text (not parsed JSON: a malformed one is kept as received).
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub status: NotificationStatus,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub received_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Parsed and acted on.
    #[sea_orm(string_value = "recorded")]
    Recorded,
    /// Could not be parsed; kept with the error.
    #[sea_orm(string_value = "malformed")]
    Malformed,
    /// Well-formed but an event type we do not handle.
    #[sea_orm(string_value = "unknown")]
    Unknown,
}

super::string_enum_text!(NotificationStatus, "notification status");
