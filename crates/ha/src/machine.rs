//! The node state machine's tracker-driven part, as pure functions (no I/O): debounce of
//! verdicts into confirmed states, the storm guard and the policy. The recovery task drives
//! the states after `down` (fencing, evacuating, ...); the tracker never touches those.
//!
//! ```text
//! up --down--> suspect --down x mutex--> down --(rules pass)--> recovery task
//!  ^             |                         |  fencing -> fenced -> evacuating -> evacuated
//!  +----up-------+                         +--up x mutex_up--> up    (nothing was done yet)
//! recovering --up x mutex_up--> up         (operator `node recover` after an evacuation)
//! ```

use std::collections::BTreeSet;

use serde::Serialize;

use aos_db::entity::NodeState;

use crate::verdict::Verdict;

/// The tracker's rules, from `[node_tracker]` and `[host_tasks]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerRules {
    /// Consecutive down verdicts before a node is confirmed down.
    pub mutex: u32,
    /// Consecutive up verdicts before a node is back up.
    pub mutex_up: u32,
    /// More than this many nodes down at once: evacuate nothing. 0 = automatic evacuation off.
    pub max_down_hosts: u32,
    pub allow_evacuate_host: bool,
    pub deny_evacuate: BTreeSet<String>,
}

impl TrackerRules {
    pub fn from_config(config: &aos_config::Config) -> Self {
        TrackerRules {
            mutex: config.node_tracker.mutex.max(1),
            mutex_up: config.node_tracker.mutex_up.max(1),
            max_down_hosts: config.node_tracker.max_down_hosts,
            allow_evacuate_host: config.host_tasks.allow_evacuate_host,
            deny_evacuate: config.host_tasks.deny_evacuate.iter().cloned().collect(),
        }
    }
}

/// A node's tracker-relevant fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub state: NodeState,
    pub down_observations: i32,
    pub up_observations: i32,
    pub is_reserve: bool,
    pub evacuation_allowed: bool,
}

/// The outcome of one verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStep {
    pub state: NodeState,
    pub down_observations: i32,
    pub up_observations: i32,
    /// Set when the state changes: the reason for the timeline.
    pub reason: Option<&'static str>,
}

impl NodeStep {
    pub fn changed_state(&self, before: NodeState) -> bool {
        self.state != before
    }
}

/// States in which the tracker only counts observations and leaves the state alone: an
/// operator or a task owns the node.
pub fn tracker_leaves_alone(state: NodeState) -> bool {
    matches!(
        state,
        NodeState::Maintenance
            | NodeState::Disabled
            | NodeState::Reserve
            | NodeState::ReserveBooting
            | NodeState::Fencing
            | NodeState::Fenced
            | NodeState::Evacuating
            | NodeState::Evacuated
            | NodeState::PowerCycling
            | NodeState::EvacuationFailed
    )
}

/// Applies one verdict to one node: the debounce.
pub fn step(node: &NodeView, verdict: Verdict, rules: &TrackerRules) -> NodeStep {
    // Counters stop at their threshold: a node that stays up (or down) round after round
    // changes nothing, so an idle round writes no row.
    let (down, up) = match verdict {
        Verdict::Down => ((node.down_observations.saturating_add(1)).min(rules.mutex as i32), 0),
        Verdict::Up => (0, (node.up_observations.saturating_add(1)).min(rules.mutex_up as i32)),
        Verdict::Unknown => (node.down_observations, node.up_observations),
    };
    let mut result = NodeStep { state: node.state, down_observations: down, up_observations: up, reason: None };
    if tracker_leaves_alone(node.state) || verdict == Verdict::Unknown {
        return result;
    }
    let confirmed_down = down >= rules.mutex as i32;
    let confirmed_up = up >= rules.mutex_up as i32;
    match (node.state, verdict) {
        (NodeState::Up, Verdict::Down) if confirmed_down => {
            result.state = NodeState::Down;
            result.reason = Some("down confirmed: consecutive down observations reached [node_tracker] mutex");
        }
        (NodeState::Up, Verdict::Down) => {
            result.state = NodeState::Suspect;
            result.reason = Some("Nova reports the node down; counting observations ([node_tracker] mutex)");
        }
        (NodeState::Suspect, Verdict::Down) if confirmed_down => {
            result.state = NodeState::Down;
            result.reason = Some("down confirmed: consecutive down observations reached [node_tracker] mutex");
        }
        (NodeState::Suspect, Verdict::Up) => {
            // A flap inside the debounce window: back up at once, nothing was decided yet.
            result.state = NodeState::Up;
            result.reason = Some("up again before the down was confirmed (debounce)");
        }
        (NodeState::Down | NodeState::FenceFailed | NodeState::Recovering, Verdict::Up) if confirmed_up => {
            result.state = NodeState::Up;
            result.reason = Some("up confirmed: consecutive up observations reached [node_tracker] mutex_up");
        }
        _ => {}
    }
    result
}

/// Why a confirmed-down node is not handed to recovery this round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// `[node_tracker] max_down_hosts = 0`.
    AutomaticEvacuationOff,
    /// More nodes down at once than `max_down_hosts`.
    StormGuard { down: usize, max_down_hosts: u32 },
    /// `[host_tasks] allow_evacuate_host = False`.
    EvacuationDisabled,
    /// The node is in `[host_tasks] deny_evacuate`.
    DeniedByList,
    /// The node's own evacuation flag is off (`node evacuation NAME deny`).
    DeniedForNode,
}

impl Hold {
    pub fn alarm_kind(&self) -> &'static str {
        match self {
            Hold::AutomaticEvacuationOff => "auto_evacuation_off",
            Hold::StormGuard { .. } => "storm_guard",
            Hold::EvacuationDisabled | Hold::DeniedByList | Hold::DeniedForNode => "evacuation_denied",
        }
    }

    pub fn message(&self, node: &str) -> String {
        match self {
            Hold::AutomaticEvacuationOff => format!(
                "{node} is down; automatic evacuation is off ([node_tracker] max_down_hosts = 0): evacuate it with \
                 `aos-cloud-manager node evacuate {node}` once you know it is dead"
            ),
            Hold::StormGuard { down, max_down_hosts } => format!(
                "{down} nodes are down at once, more than [node_tracker] max_down_hosts = {max_down_hosts}: a network \
                 or control-plane fault is likelier than that many dead hosts, so nothing is evacuated automatically"
            ),
            Hold::EvacuationDisabled => {
                format!("{node} is down; [host_tasks] allow_evacuate_host = False: not evacuated")
            }
            Hold::DeniedByList => format!("{node} is down; it is listed in [host_tasks] deny_evacuate: not evacuated"),
            Hold::DeniedForNode => {
                format!("{node} is down; its evacuation flag is off (`node evacuation {node} allow` to change)")
            }
        }
    }
}

/// States of a node that is down and not yet dealt with: what the recovery task counts when it
/// re-checks the storm guard from the database (it has no fresh verdicts; the tracker counts
/// verdicts, filtered by [`counts_for_storm_guard`]).
pub const DOWN_STATES: &[NodeState] = &[
    NodeState::Suspect,
    NodeState::Down,
    NodeState::Fencing,
    NodeState::Fenced,
    NodeState::Evacuating,
    NodeState::FenceFailed,
    NodeState::EvacuationFailed,
];

/// Nodes counted by the storm guard: not standby, not taken out by an operator, and not an
/// incident already closed by an evacuation (its host stays forced down until recovered).
pub fn counts_for_storm_guard(node: &NodeView) -> bool {
    !node.is_reserve
        && !matches!(
            node.state,
            NodeState::Maintenance
                | NodeState::Disabled
                | NodeState::Reserve
                | NodeState::ReserveBooting
                | NodeState::Evacuated
        )
}

/// The storm guard and the policy for one confirmed-down node. `down_now` is the number of
/// nodes counted by the storm guard whose verdict is down this round.
pub fn decide(node: &NodeView, down_now: usize, rules: &TrackerRules) -> Result<(), Hold> {
    if rules.max_down_hosts == 0 {
        return Err(Hold::AutomaticEvacuationOff);
    }
    if down_now > rules.max_down_hosts as usize {
        return Err(Hold::StormGuard { down: down_now, max_down_hosts: rules.max_down_hosts });
    }
    if !rules.allow_evacuate_host {
        return Err(Hold::EvacuationDisabled);
    }
    if rules.deny_evacuate.contains(&node.name) {
        return Err(Hold::DeniedByList);
    }
    if !node.evacuation_allowed {
        return Err(Hold::DeniedForNode);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TrackerRules {
        TrackerRules {
            mutex: 3,
            mutex_up: 2,
            max_down_hosts: 1,
            allow_evacuate_host: true,
            deny_evacuate: BTreeSet::new(),
        }
    }

    fn node(state: NodeState) -> NodeView {
        NodeView {
            name: "n1".into(),
            state,
            down_observations: 0,
            up_observations: 0,
            is_reserve: false,
            evacuation_allowed: true,
        }
    }

    fn run(mut node: NodeView, verdicts: &[Verdict], rules: &TrackerRules) -> NodeView {
        for verdict in verdicts {
            let next = step(&node, *verdict, rules);
            node.state = next.state;
            node.down_observations = next.down_observations;
            node.up_observations = next.up_observations;
        }
        node
    }

    #[test]
    fn a_node_is_confirmed_down_only_after_mutex_consecutive_down_verdicts() {
        let rules = rules();
        let after_two = run(node(NodeState::Up), &[Verdict::Down, Verdict::Down], &rules);
        assert_eq!(after_two.state, NodeState::Suspect);
        let after_three = run(after_two, &[Verdict::Down], &rules);
        assert_eq!(after_three.state, NodeState::Down);
    }

    #[test]
    fn a_node_that_stays_up_reaches_a_fixed_point_so_idle_rounds_write_nothing() {
        let rules = rules();
        let settled = run(node(NodeState::Up), &[Verdict::Up; 5], &rules);
        let next = step(&settled, Verdict::Up, &rules);
        assert_eq!(
            (next.state, next.down_observations, next.up_observations),
            (settled.state, settled.down_observations, settled.up_observations)
        );
        let down = run(node(NodeState::Up), &[Verdict::Down; 10], &rules);
        let next = step(&down, Verdict::Down, &rules);
        assert_eq!((next.down_observations, next.up_observations), (down.down_observations, down.up_observations));
    }

    #[test]
    fn with_mutex_1_the_first_down_verdict_confirms() {
        let rules = TrackerRules { mutex: 1, ..rules() };
        assert_eq!(run(node(NodeState::Up), &[Verdict::Down], &rules).state, NodeState::Down);
    }

    #[test]
    fn a_flap_inside_the_debounce_window_returns_to_up_and_restarts_the_count() {
        let rules = rules();
        let flapped = run(node(NodeState::Up), &[Verdict::Down, Verdict::Down, Verdict::Up], &rules);
        assert_eq!(flapped.state, NodeState::Up);
        assert_eq!(flapped.down_observations, 0);
        let again = run(flapped, &[Verdict::Down, Verdict::Down], &rules);
        assert_eq!(again.state, NodeState::Suspect, "the count restarted after the flap");
    }

    #[test]
    fn unknown_verdicts_neither_confirm_nor_reset() {
        let rules = rules();
        let node = run(node(NodeState::Up), &[Verdict::Down, Verdict::Unknown, Verdict::Down], &rules);
        assert_eq!((node.state, node.down_observations), (NodeState::Suspect, 2));
    }

    #[test]
    fn a_confirmed_down_node_needs_mutex_up_up_verdicts_to_be_up_again() {
        let rules = rules();
        let once = run(node(NodeState::Down), &[Verdict::Up], &rules);
        assert_eq!(once.state, NodeState::Down);
        assert_eq!(run(once, &[Verdict::Up], &rules).state, NodeState::Up);
    }

    #[test]
    fn states_owned_by_a_task_or_an_operator_are_never_changed_by_verdicts() {
        let rules = rules();
        for state in [
            NodeState::Maintenance,
            NodeState::Fencing,
            NodeState::Fenced,
            NodeState::Evacuating,
            NodeState::Evacuated,
            NodeState::Reserve,
            NodeState::EvacuationFailed,
        ] {
            let after = run(node(state), &[Verdict::Down; 5], &rules);
            assert_eq!(after.state, state);
            let after = run(node(state), &[Verdict::Up; 5], &rules);
            assert_eq!(after.state, state);
        }
    }

    #[test]
    fn max_down_hosts_0_turns_automatic_evacuation_off() {
        let rules = TrackerRules { max_down_hosts: 0, ..rules() };
        assert_eq!(decide(&node(NodeState::Down), 1, &rules), Err(Hold::AutomaticEvacuationOff));
    }

    #[test]
    fn more_nodes_down_than_max_down_hosts_holds_every_evacuation() {
        let rules = rules();
        assert_eq!(decide(&node(NodeState::Down), 1, &rules), Ok(()));
        assert_eq!(decide(&node(NodeState::Down), 2, &rules), Err(Hold::StormGuard { down: 2, max_down_hosts: 1 }));
    }

    #[test]
    fn policy_switches_each_hold_the_evacuation() {
        let off = TrackerRules { allow_evacuate_host: false, ..rules() };
        assert_eq!(decide(&node(NodeState::Down), 1, &off), Err(Hold::EvacuationDisabled));
        let listed = TrackerRules { deny_evacuate: ["n1".to_string()].into(), ..rules() };
        assert_eq!(decide(&node(NodeState::Down), 1, &listed), Err(Hold::DeniedByList));
        let mut flagged = node(NodeState::Down);
        flagged.evacuation_allowed = false;
        assert_eq!(decide(&flagged, 1, &rules()), Err(Hold::DeniedForNode));
    }

    #[test]
    fn standby_maintenance_and_closed_incidents_do_not_count_for_the_storm_guard() {
        let mut reserve = node(NodeState::Down);
        reserve.is_reserve = true;
        assert!(!counts_for_storm_guard(&reserve));
        assert!(!counts_for_storm_guard(&node(NodeState::Maintenance)));
        assert!(!counts_for_storm_guard(&node(NodeState::Evacuated)));
        assert!(counts_for_storm_guard(&node(NodeState::Suspect)));
        assert!(counts_for_storm_guard(&node(NodeState::Down)));
    }
}
