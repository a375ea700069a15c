//! The node tracker: one round every `[node_tracker] loop_time`, run by the beat that holds the
//! lease. A round is one bulk call to the cloud and one database transaction guarded by the
//! lease generation (a beat that lost its lease writes nothing):
//!
//! 1. a verdict per node from its signals ([`crate::verdict`]);
//! 2. the debounce ([`crate::machine::step`]) moves nodes between up, suspect and down, and
//!    back to up after `mutex_up` (only states the tracker owns);
//! 3. every confirmed-down node goes through the storm guard and the policy
//!    ([`crate::machine::decide`]): held → an alarm and a timeline entry, once per incident;
//!    allowed → a `recover_node` task, recorded in the same transaction with an idempotency
//!    key naming the incident, so a second round or a second beat never starts a second one.
//!
//! The isolation check, fencing, force-down and evacuation run in that task (on a worker),
//! because they wait (state files, BMCs, Nova).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use serde_json::json;

use aos_db::entity::{NodeState, node, task};
use aos_jobs::{NewTask, TaskId};

use crate::cloud::{Cloud, HostObservation};
use crate::machine::{self, Hold, NodeView, TrackerRules};
use crate::store;
use crate::verdict::{Signals, Verdict, verdict};

/// The task kind the tracker starts for a confirmed-down node.
pub const RECOVER_NODE: &str = "recover_node";

/// The input of a `recover_node` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverNode {
    pub node_id: i64,
    pub node: String,
    /// When the node was confirmed down (the incident's start; also the isolation check's
    /// "written after" bound).
    pub down_since: chrono::DateTime<Utc>,
    /// Set by an operator (`node evacuate --skip-fence`): evacuate without powering the node
    /// off. Never set by the tracker.
    #[serde(default)]
    pub skip_fence: bool,
    /// Set by an operator: skip the storm guard, the policy and the isolation check.
    #[serde(default)]
    pub manual: bool,
    /// `node shutdown NAME`: a planned power-off of a healthy host. The node is put in
    /// maintenance and disabled in Nova, powered off (soft) through its device, and once Nova
    /// sees its service down (`[power] shutdown_interval` x `shutdown_max_tick`) its servers are
    /// evacuated like those of a failed host.
    #[serde(default)]
    pub shutdown: bool,
}

/// What one round did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RoundReport {
    pub nodes: usize,
    pub observed: usize,
    pub down_now: usize,
    /// Nodes whose agent has a recorded heartbeat that is stale (`agent_alive = Some(false)`).
    pub agents_silent: Vec<String>,
    pub transitions: Vec<(String, NodeState, NodeState)>,
    pub recoveries: Vec<(String, String)>,
    pub held: Vec<(String, Hold)>,
    /// Tasks recorded this round; publish them after the round (the sweep would otherwise).
    #[serde(skip)]
    pub to_publish: Vec<TaskId>,
    pub cloud_call: Duration,
    pub total: Duration,
}

/// The idempotency key of the recovery of one incident of one node.
pub fn incident_key(node_id: i64, down_since: chrono::DateTime<Utc>) -> String {
    format!("{RECOVER_NODE}:{node_id}:{}", down_since.timestamp_millis())
}

/// One tracker round. `lease` is `(name, generation)` of the beat's lease (`None` in tools
/// and tests that run the tracker alone).
pub async fn tracker_round(
    db: &aos_db::DatabaseConnection,
    cloud: &dyn Cloud,
    rules: &TrackerRules,
    lease: Option<(&str, i64)>,
    actor: &str,
) -> anyhow::Result<RoundReport> {
    let started = Instant::now();
    let observations = cloud.compute_hosts().await?;
    let cloud_call = started.elapsed();
    let by_host: BTreeMap<&str, &HostObservation> = observations.iter().map(|o| (o.host.as_str(), o)).collect();
    let now = aos_db::db_time(Utc::now());

    let transaction = aos_db::begin_write(db).await?;
    if let Some((name, generation)) = lease {
        aos_db::guard_lease(&transaction, name, generation).await?;
    }
    let nodes = node::Entity::find().filter(node::Column::RemovedFromNova.eq(false)).all(&transaction).await?;
    let mut report = RoundReport { nodes: nodes.len(), observed: observations.len(), ..RoundReport::default() };
    // The node agents' heartbeats as the controller agent recorded them: a node with a row runs
    // an agent (alive until the row's `expires_at`); a node without one runs none (`None`).
    let agents = aos_db::agent_liveness(&transaction, now).await?;

    // 1-2: verdicts and debounce.
    let mut after = Vec::with_capacity(nodes.len());
    for row in nodes {
        let nova = by_host.get(row.name.as_str()).copied();
        let agent_alive = agents.get(row.name.as_str()).copied();
        if agent_alive == Some(false) {
            report.agents_silent.push(row.name.clone());
        }
        let (verdict, why) = verdict(&Signals { nova, agent_alive, ..Signals::default() });
        let view = NodeView {
            name: row.name.clone(),
            state: row.state,
            down_observations: row.down_observations,
            up_observations: row.up_observations,
            is_reserve: row.is_reserve,
            evacuation_allowed: row.evacuation_allowed,
        };
        let next = machine::step(&view, verdict, rules);
        let nova_changed = nova.is_some_and(|nova| {
            row.nova_service_id.as_deref() != Some(nova.service_id.as_str())
                || row.nova_state.as_deref() != Some(if nova.up { "up" } else { "down" })
                || row.nova_status.as_deref() != Some(if nova.enabled { "enabled" } else { "disabled" })
                || row.nova_forced_down != nova.forced_down
        });
        let counters_changed =
            next.down_observations != row.down_observations || next.up_observations != row.up_observations;
        let state_changed = next.state != row.state;
        let mut row = row;
        if nova_changed || counters_changed || state_changed {
            let mut update: node::ActiveModel = row.clone().into();
            if let Some(nova) = nova {
                update.nova_service_id = Set(Some(nova.service_id.clone()));
                update.nova_state = Set(Some(if nova.up { "up" } else { "down" }.to_owned()));
                update.nova_status = Set(Some(if nova.enabled { "enabled" } else { "disabled" }.to_owned()));
                update.nova_forced_down = Set(nova.forced_down);
            }
            update.down_observations = Set(next.down_observations);
            update.up_observations = Set(next.up_observations);
            update.updated_at = Set(now);
            if state_changed {
                update.state = Set(next.state);
                update.state_changed_at = Set(now);
            }
            row = update.update(&transaction).await?;
            if state_changed {
                let event = store::Event {
                    node_id: row.id,
                    kind: "state_changed",
                    from: Some(view.state),
                    to: Some(next.state),
                    actor,
                    reason: next.reason.unwrap_or(why),
                    task_id: None,
                    details: json!({
                        "verdict": verdict, "signal": why, "agent_alive": agent_alive,
                        "down_observations": next.down_observations, "up_observations": next.up_observations,
                    }),
                };
                store::record_event(&transaction, event, now).await?;
                if next.state == NodeState::Up {
                    store::clear_alarms(&transaction, Some(row.id), &[], actor).await?;
                }
                report.transitions.push((row.name.clone(), view.state, next.state));
            }
        }
        after.push((row, verdict));
    }

    // 3: storm guard and policy for the confirmed-down nodes.
    let down_now = after
        .iter()
        .filter(|(row, verdict)| *verdict == Verdict::Down && machine::counts_for_storm_guard(&view_of(row)))
        .count();
    report.down_now = down_now;
    if rules.max_down_hosts > 0 && down_now <= rules.max_down_hosts as usize {
        store::clear_alarms(&transaction, None, &["storm_guard"], actor).await?;
    }
    for (row, _) in after.iter().filter(|(row, _)| row.state == NodeState::Down) {
        let down_since = row.state_changed_at;
        let key = incident_key(row.id, down_since);
        let started =
            task::Entity::find().filter(task::Column::IdempotencyKey.eq(key.clone())).one(&transaction).await?;
        if started.is_some() {
            continue;
        }
        match machine::decide(&view_of(row), down_now, rules) {
            Err(hold) => {
                let message = hold.message(&row.name);
                let details = serde_json::to_value(&hold)?;
                if let Hold::StormGuard { .. } = hold {
                    store::raise_alarm(
                        &transaction,
                        "storm_guard",
                        "critical",
                        None,
                        &message,
                        details.clone(),
                        down_since,
                    )
                    .await?;
                }
                let raised = store::raise_alarm(
                    &transaction,
                    hold.alarm_kind(),
                    "critical",
                    Some(row.id),
                    &message,
                    details.clone(),
                    down_since,
                )
                .await?;
                if raised {
                    let event = store::Event {
                        node_id: row.id,
                        kind: "evacuation_held",
                        from: None,
                        to: None,
                        actor,
                        reason: &message,
                        task_id: None,
                        details,
                    };
                    store::record_event(&transaction, event, now).await?;
                }
                report.held.push((row.name.clone(), hold));
            }
            Ok(()) => {
                let payload = RecoverNode {
                    node_id: row.id,
                    node: row.name.clone(),
                    down_since,
                    skip_fence: false,
                    manual: false,
                    shutdown: false,
                };
                let new =
                    NewTask::new(RECOVER_NODE, serde_json::to_value(&payload)?).node_id(row.id).idempotency_key(key);
                let recorded = aos_jobs::insert_task(&transaction, &new).await?;
                if recorded.created {
                    let task_id = recorded.task_id.to_string();
                    let event = store::Event {
                        node_id: row.id,
                        kind: "recovery_requested",
                        from: None,
                        to: None,
                        actor,
                        reason: "down confirmed, storm guard and policy passed: recovery task started",
                        task_id: Some(&task_id),
                        details: json!({ "down_now": down_now, "max_down_hosts": rules.max_down_hosts }),
                    };
                    store::record_event(&transaction, event, now).await?;
                    report.recoveries.push((row.name.clone(), task_id));
                    report.to_publish.push(recorded.task_id);
                }
            }
        }
    }
    transaction.commit().await?;
    report.cloud_call = cloud_call;
    report.total = started.elapsed();
    metrics::histogram!("aos_tracker_round_duration_seconds").record(report.total.as_secs_f64());
    metrics::gauge!("aos_tracker_down_now").set(report.down_now as f64);
    Ok(report)
}

fn view_of(row: &node::Model) -> NodeView {
    NodeView {
        name: row.name.clone(),
        state: row.state,
        down_observations: row.down_observations,
        up_observations: row.up_observations,
        is_reserve: row.is_reserve,
        evacuation_allowed: row.evacuation_allowed,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::Duration as ChronoDuration;

    use super::*;
    use crate::sim::{SimCloud, SimSettings};

    fn heartbeat(node: &str, expires_in: ChronoDuration) -> aos_db::ReceivedHeartbeat {
        let now = Utc::now();
        aos_db::ReceivedHeartbeat {
            node: node.to_owned(),
            message_id: uuid::Uuid::new_v4().to_string(),
            sequence: 1,
            sent_at: now,
            received_at: now,
            expires_at: now + expires_in,
            facts: None,
        }
    }

    /// Three hosts Nova reports down: one whose agent's heartbeat is fresh (its down is vetoed:
    /// the node answers), one whose heartbeat is stale, one without an agent. The stale and the
    /// agentless node are counted down, and only the stale one is reported as a silent agent.
    async fn agent_heartbeats_feed_the_agent_signal(db: &aos_db::DatabaseConnection) -> anyhow::Result<()> {
        aos_db::migrate_to(db, None).await?;
        let sim = SimCloud::new(SimSettings {
            call_latency: Duration::ZERO,
            service_down_time: Duration::ZERO,
            ..SimSettings::default()
        });
        for host in ["fresh", "stale", "none", "spare"] {
            sim.add_host(host, false);
        }
        crate::cloud::sync_nodes_from(db, &sim, |_| true, "test").await?;
        aos_db::record_agent_heartbeats(
            db,
            None,
            &[heartbeat("fresh", ChronoDuration::seconds(60)), heartbeat("stale", ChronoDuration::seconds(-1))],
        )
        .await?;
        let liveness = aos_db::agent_liveness(db, Utc::now()).await?;
        assert_eq!(liveness.get("fresh"), Some(&true));
        assert_eq!(liveness.get("stale"), Some(&false));
        assert_eq!(liveness.get("none"), None);

        for host in ["fresh", "stale", "none"] {
            sim.kill(host);
        }
        let rules = TrackerRules {
            mutex: 2,
            mutex_up: 1,
            max_down_hosts: 0,
            allow_evacuate_host: true,
            deny_evacuate: BTreeSet::new(),
        };
        let report = tracker_round(db, &sim, &rules, None, "test").await?;
        assert_eq!(report.agents_silent, vec!["stale".to_owned()]);
        let moved: BTreeSet<&str> = report.transitions.iter().map(|(node, ..)| node.as_str()).collect();
        assert_eq!(moved, BTreeSet::from(["none", "stale"]), "{:?}", report.transitions);
        let fresh = aos_db::find_node(db, "fresh").await?.expect("fresh node");
        assert_eq!(fresh.state, NodeState::Up);

        // The fresh agent falls silent: the next round counts that node down too.
        aos_db::record_agent_heartbeats(db, None, &[heartbeat("fresh", ChronoDuration::seconds(-1))]).await?;
        let report = tracker_round(db, &sim, &rules, None, "test").await?;
        assert_eq!(report.agents_silent, vec!["fresh".to_owned(), "stale".to_owned()]);
        assert!(report.transitions.iter().any(|(node, ..)| node == "fresh"), "{:?}", report.transitions);
        Ok(())
    }

    aos_db::db_test_suite!(agent_heartbeats_feed_the_agent_signal);
}
