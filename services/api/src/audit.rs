//! The audit trail of mutating requests (`[api] audit_enabled`): one `audit_log` row and one
//! log line per POST/PUT/PATCH/DELETE that got past authentication — who (Keystone user and
//! project), what (the policy action), on what (the target), how it ended (`succeeded`,
//! `accepted` for work handed to a worker, `denied`, `failed`) and the request id that ties
//! the row to the logs.
//!
//! Handlers say what the request was by putting an [`AuditEntry`] into the response's
//! extensions; the middleware in `lib.rs` writes the row after the response is built, so a
//! request that failed in the handler is recorded too. The table is the API's own (nothing
//! else writes it), so its one insert lives here.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, Set};

use aos_db::entity::audit_log;
use aos_openstack::TokenInfo;

/// What a mutating request was about, set by its handler.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub action: String,
    pub target: Option<String>,
    /// Request parameters, never secrets.
    pub details: Option<serde_json::Value>,
}

/// How a request ended, from its status.
pub fn outcome(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        202 => "accepted",
        200..=299 => "succeeded",
        403 => "denied",
        _ => "failed",
    }
}

/// Writes the row and the log line. A failure to write is logged, not answered: the action
/// already happened.
pub async fn record(
    db: &aos_db::DatabaseConnection,
    request_id: &str,
    caller: &TokenInfo,
    entry: &AuditEntry,
    outcome: &str,
) {
    tracing::info!(
        target: "aos_api::audit",
        request_id,
        user = %caller.user_name,
        user_id = %caller.user_id,
        project_id = %caller.project_id,
        action = %entry.action,
        target_name = entry.target.as_deref().unwrap_or(""),
        outcome,
        "audit"
    );
    let row = audit_log::ActiveModel {
        occurred_at: Set(aos_db::db_time(Utc::now())),
        request_id: Set(request_id.to_string()),
        user_id: Set(caller.user_id.clone()),
        project_id: Set(caller.project_id.clone()),
        action: Set(entry.action.clone()),
        target: Set(entry.target.clone()),
        outcome: Set(outcome.to_string()),
        details: Set(entry.details.clone()),
        ..Default::default()
    };
    if let Err(error) = row.insert(db).await {
        tracing::error!(%error, request_id, action = %entry.action, "cannot write the audit record");
    }
}
