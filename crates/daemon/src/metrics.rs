//! Prometheus metrics of every daemon, served as `GET /metrics` next to `/healthz` and
//! `/readyz` (the daemons' `[<service>] status_port`, the API's own port).
//!
//! Two sources, one text:
//! - **In-process** counters and histograms recorded through the `metrics` facade by the crates
//!   that see the events: OpenStack calls (`aos_openstack_*`, every daemon that talks to
//!   Keystone/Nova/Placement), notifications consumed (listener), tasks finished and their
//!   duration (worker), evacuations and their outcome (worker), tracker rounds (beat). The
//!   recorder is `metrics-exporter-prometheus` without its HTTP listener: we render its text
//!   in our own route.
//! - **The shared database at scrape time**: nodes by state, reserve pool size, tasks by kind and
//!   state, open alarms, which controller holds each lease. Read, not counted, so every daemon
//!   reports the same current figures and nothing drifts across restarts.

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Every metric family a daemon may export (the in-process ones appear once first recorded).
/// The Grafana dashboard in `contrib/grafana/` may use only these (a test checks).
pub const METRIC_FAMILIES: &[&str] = &[
    // From the database, at scrape time.
    "aos_up",
    "aos_database_up",
    "aos_nodes",
    "aos_reserve_pool_members",
    "aos_tasks",
    "aos_alarms_open",
    "aos_lease_holder",
    "aos_lease_generation",
    // In-process (the `metrics` facade).
    "aos_openstack_requests_total",
    "aos_openstack_request_duration_seconds",
    "aos_openstack_errors_total",
    "aos_notifications_consumed_total",
    "aos_task_runs_total",
    "aos_task_run_duration_seconds",
    "aos_evacuations_total",
    "aos_recovery_duration_seconds",
    "aos_tracker_round_duration_seconds",
    "aos_tracker_down_now",
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static DATABASE: OnceLock<aos_db::DatabaseConnection> = OnceLock::new();

/// Histogram buckets (seconds) for call and task durations: 5 ms … 10 min.
const DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Installs the process-wide recorder (idempotent; a process that already has another
/// recorder keeps it and serves the database figures only).
pub fn install() {
    RECORDER.get_or_init(|| match PrometheusBuilder::new().set_buckets(DURATION_BUCKETS) {
        Ok(builder) => match builder.install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed: in-process metrics are not exported");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "metrics buckets refused");
            None
        }
    });
}

/// The database whose figures `/metrics` reports (the first one registered in this process).
pub fn set_database(db: aos_db::DatabaseConnection) {
    let _ = DATABASE.set(db);
}

/// The whole Prometheus text: database figures, then in-process metrics.
pub async fn render(role: &str) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# HELP aos_up The daemon answers (role label: which daemon).");
    let _ = writeln!(text, "# TYPE aos_up gauge");
    let _ = writeln!(text, "aos_up{{role=\"{}\"}} 1", escape(role));
    if let Some(db) = DATABASE.get() {
        match aos_db::metrics_snapshot(db).await {
            Ok(snapshot) => render_snapshot(&mut text, &snapshot),
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the database figures");
                let _ = writeln!(text, "# HELP aos_database_up The database answered the metrics queries.");
                let _ = writeln!(text, "# TYPE aos_database_up gauge");
                let _ = writeln!(text, "aos_database_up 0");
            }
        }
    }
    if let Some(Some(handle)) = RECORDER.get() {
        text.push_str(&handle.render());
    }
    text
}

fn render_snapshot(text: &mut String, snapshot: &aos_db::MetricsSnapshot) {
    header(text, "aos_database_up", "gauge", "The database answered the metrics queries.");
    let _ = writeln!(text, "aos_database_up 1");
    header(text, "aos_nodes", "gauge", "Compute nodes by HA state (nodes Nova no longer lists excluded).");
    for (state, count) in &snapshot.nodes_by_state {
        let _ = writeln!(text, "aos_nodes{{state=\"{}\"}} {count}", escape(state));
    }
    header(text, "aos_reserve_pool_members", "gauge", "Nodes in the powered-off reserve pool (reserve pool add).");
    let _ = writeln!(text, "aos_reserve_pool_members {}", snapshot.pool_members);
    header(text, "aos_tasks", "gauge", "Tasks in the database by kind and state.");
    for (kind, state, count) in &snapshot.tasks {
        let _ = writeln!(text, "aos_tasks{{kind=\"{}\",state=\"{}\"}} {count}", escape(kind), escape(state));
    }
    header(text, "aos_alarms_open", "gauge", "Alarms not cleared, by kind and severity.");
    for (kind, severity, count) in &snapshot.open_alarms {
        let _ =
            writeln!(text, "aos_alarms_open{{kind=\"{}\",severity=\"{}\"}} {count}", escape(kind), escape(severity));
    }
    header(text, "aos_lease_holder", "gauge", "1 for the controller process holding each lease while it is valid.");
    let now = chrono::Utc::now();
    for (lease, holder, _, expires_at) in &snapshot.leases {
        let valid = u8::from(*expires_at > now);
        let _ = writeln!(text, "aos_lease_holder{{lease=\"{}\",holder=\"{}\"}} {valid}", escape(lease), escape(holder));
    }
    header(
        text,
        "aos_lease_generation",
        "gauge",
        "Fencing generation of each lease (bumped at every change of holder).",
    );
    for (lease, _, generation, _) in &snapshot.leases {
        let _ = writeln!(text, "aos_lease_generation{{lease=\"{}\"}} {generation}", escape(lease));
    }
}

fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// Label values: backslash, double quote and newline escaped (Prometheus text format).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grafana_dashboard_uses_only_exported_metrics() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/grafana/aos-cloud-manager.json");
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut used = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let mut rest = expr;
                while let Some(at) = rest.find("aos_") {
                    let name: String = rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    rest = &rest[at + name.len()..];
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .unwrap_or(&name)
                        .to_owned();
                    used.insert(family);
                }
            }
        }
        let unknown: Vec<&String> = used.iter().filter(|name| !METRIC_FAMILIES.contains(&name.as_str())).collect();
        assert!(unknown.is_empty(), "the dashboard uses metrics no daemon exports: {unknown:?}");
        assert!(used.len() >= 15, "the dashboard covers the exported families: {used:?}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_snapshot_renders_every_family_with_its_type() {
        let snapshot = aos_db::MetricsSnapshot {
            nodes_by_state: vec![("up".into(), 3), ("down".into(), 0)],
            pool_members: 1,
            tasks: vec![("recover_node".into(), "succeeded".into(), 2)],
            open_alarms: vec![("capacity_short".into(), "warning".into(), 1)],
            leases: vec![("beat".into(), "ctl-1:42:ab".into(), 7, chrono::Utc::now() + chrono::Duration::seconds(30))],
        };
        let mut text = String::new();
        render_snapshot(&mut text, &snapshot);
        for expected in [
            "# TYPE aos_nodes gauge",
            "aos_nodes{state=\"up\"} 3",
            "aos_nodes{state=\"down\"} 0",
            "aos_reserve_pool_members 1",
            "aos_tasks{kind=\"recover_node\",state=\"succeeded\"} 2",
            "aos_alarms_open{kind=\"capacity_short\",severity=\"warning\"} 1",
            "aos_lease_holder{lease=\"beat\",holder=\"ctl-1:42:ab\"} 1",
            "aos_lease_generation{lease=\"beat\"} 7",
        ] {
            assert!(text.lines().any(|line| line == expected), "{expected:?} missing from\n{text}");
        }
    }
}
