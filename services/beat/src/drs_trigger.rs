//! The DRS trigger (`[drs_trigger]`; docs/adr/0015-drs.md): every `trigger_interval` seconds,
//! while this beat holds its lease and a DRS system is configured (`[drs] host`), an audit is
//! asked of it; when `[drs_trigger] enabled`, the plan it recommends is applied at once (a
//! `drs_apply_plan` task for the workers). What it did is logged, and also appended to
//! `[drs_trigger] logfile` when set.
//!
//! No audit while an HA recovery runs or while an earlier plan is still being applied (its
//! moves and the new plan's would compete).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aos_balance::drs::{AuditOutcome, DRS_APPLY_PLAN, Recommender};
use aos_jobs::TaskId;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrsTriggerReport {
    /// Why no audit was asked.
    pub held: Option<String>,
    pub audit: Option<AuditOutcome>,
    /// The task applying the new plan (to publish).
    pub applying: Option<TaskId>,
    pub took: Duration,
}

/// One round (see the module header). `scope`: an aggregate, or `None` for the source's whole
/// scope (the beat's).
pub async fn drs_trigger_round(
    db: &aos_db::DatabaseConnection,
    lease: Option<(&str, i64)>,
    source: &dyn Recommender,
    scope: Option<&str>,
    apply: bool,
    actor: &str,
) -> anyhow::Result<DrsTriggerReport> {
    let started = Instant::now();
    let mut report = DrsTriggerReport::default();
    let active = aos_db::active_tasks_of_kinds(db, &[aos_ha::RECOVER_NODE, DRS_APPLY_PLAN]).await?;
    if let Some(task) = active.first() {
        report.held = Some(format!("{} task {} is {}", task.kind, task.id, task.state));
        report.took = started.elapsed();
        return Ok(report);
    }
    let audit = aos_balance::drs::run_audit(db, lease, source, scope, "beat", actor).await?;
    if apply && let Some(plan_id) = &audit.plan_id {
        report.applying = Some(aos_balance::drs::apply_plan(db, lease, plan_id, actor).await?);
    }
    report.audit = Some(audit);
    report.took = started.elapsed();
    Ok(report)
}

/// The lines a round leaves in the logs (and in `[drs_trigger] logfile`).
pub fn report_lines(report: &DrsTriggerReport, source: &str) -> Vec<String> {
    if let Some(held) = &report.held {
        return vec![format!("DRS audit held: {held}")];
    }
    let Some(audit) = &report.audit else { return Vec::new() };
    let mut lines = Vec::new();
    match (&audit.error, &audit.plan_id) {
        (Some(error), _) => lines.push(format!("DRS audit {} ({source}) failed: {error}", audit.audit_id)),
        (None, None) => lines.push(format!("DRS audit {} ({source}): nothing to do", audit.audit_id)),
        (None, Some(plan)) => {
            lines.push(format!("DRS audit {} ({source}): action plan {plan} recommended", audit.audit_id));
            match &report.applying {
                Some(task) => lines.push(format!("DRS action plan {plan}: applying automatically as task {task}")),
                None => lines.push(format!(
                    "DRS action plan {plan}: not applied ([drs_trigger] enabled = False); \
                     `aos-cloud-manager drs plan apply {plan}` applies it"
                )),
            }
        }
    }
    lines
}

/// Logs the round and appends its lines to `logfile` when set (a file that cannot be written
/// is a warning, not a failure of the round).
pub fn log_report(report: &DrsTriggerReport, source: &str, logfile: Option<&Path>) {
    let lines = report_lines(report, source);
    for line in &lines {
        tracing::info!(took_ms = report.took.as_millis() as u64, "{line}");
    }
    let Some(path) = logfile else { return };
    let written = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut file| {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for line in &lines {
            writeln!(file, "{now} {line}")?;
        }
        Ok(())
    });
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot write [drs_trigger] logfile");
    }
}
