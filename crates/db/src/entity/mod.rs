//! One sea-orm entity per table (module name = the table's row noun, singular). The schema
//! itself is defined by the `aos-migrations` crate; these modules mirror it column for
//! column and must change in the same commit as any migration that alters a table.
//!
//! Columns whose values form a closed set that code branches on (node, task and step states,
//! service instance and notification status) are Rust enums stored as their lowercase names;
//! open-ended vocabularies (event kinds, drivers, alarm kinds) stay strings so that adding a
//! word does not need a migration.

pub mod agent_heartbeat;
pub mod alarm;
pub mod audit_log;
pub mod availability_storage;
pub mod drs_action;
pub mod drs_action_plan;
pub mod drs_audit;
pub mod lease;
pub mod node;
pub mod node_event;
pub mod node_power_binding;
pub mod node_storage_binding;
pub mod notification;
pub mod power_device;
pub mod power_operation;
pub mod reserve_binding;
pub mod service_instance;
pub mod task;
pub mod task_step;

pub use drs_action::DrsActionState;
pub use drs_action_plan::DrsPlanState;
pub use drs_audit::DrsAuditState;
pub use node::NodeState;
pub use notification::NotificationStatus;
pub use service_instance::ServiceInstanceState;
pub use task::TaskState;
pub use task_step::TaskStepState;

/// A stored enum value that is not one of the enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

/// `Display`/`FromStr` for a string-backed `DeriveActiveEnum`, using exactly the stored
/// names, so logs, the CLI and the API spell states the way the database does.
macro_rules! string_enum_text {
    ($enum:ty, $kind:literal) => {
        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&sea_orm::ActiveEnum::to_value(self))
            }
        }

        impl std::str::FromStr for $enum {
            type Err = $crate::entity::UnknownValue;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                <Self as sea_orm::ActiveEnum>::try_from_value(&value.to_owned())
                    .map_err(|_| $crate::entity::UnknownValue { kind: $kind, value: value.to_owned() })
            }
        }
    };
}
pub(crate) use string_enum_text;
