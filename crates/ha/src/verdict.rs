//! One verdict per node per tracker round, formed from every signal available about it.
//!
//! Nova's compute service state is always there. The node agent's heartbeat and the BMC's
//! power reading are optional signals (filled in when the agent and the power layer provide
//! them); a new signal is a new field of [`Signals`] and a new rule here, nothing else.
//!
//! The rules lean towards "not down": a node is only counted down when no signal says it is
//! alive, because a wrong "down" leads to an evacuation of servers that still run.

use serde::Serialize;

use crate::cloud::HostObservation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Up,
    Down,
    /// The signals disagree or are missing: neither counts towards up nor towards down.
    Unknown,
}

/// Everything known about one node this round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    /// Nova's compute service; `None` when Nova does not list the host.
    pub nova: Option<&'a HostObservation>,
    /// The node agent answered recently (`Some(true)`), was expected and stayed silent
    /// (`Some(false)`); `None` when the node runs no agent.
    pub agent_alive: Option<bool>,
    /// The BMC's power reading: `Some(false)` = powered off; `None` when not read.
    pub bmc_powered_on: Option<bool>,
}

/// The verdict and a short reason for the timeline.
pub fn verdict(signals: &Signals<'_>) -> (Verdict, &'static str) {
    if signals.bmc_powered_on == Some(false) {
        return (Verdict::Down, "the BMC reports the node powered off");
    }
    let Some(nova) = signals.nova else {
        return (Verdict::Unknown, "Nova does not list a nova-compute service for this host");
    };
    if nova.up {
        return (Verdict::Up, "Nova reports nova-compute up");
    }
    if signals.agent_alive == Some(true) {
        return (Verdict::Unknown, "Nova reports nova-compute down but the node agent answers");
    }
    if nova.forced_down {
        (Verdict::Down, "nova-compute is forced down")
    } else if signals.agent_alive == Some(false) {
        (Verdict::Down, "Nova reports nova-compute down and the node agent's heartbeat is stale")
    } else {
        (Verdict::Down, "Nova reports nova-compute down (no heartbeat)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nova(up: bool) -> HostObservation {
        HostObservation { host: "h".into(), service_id: "s".into(), up, enabled: true, forced_down: false }
    }

    #[test]
    fn nova_alone_decides_when_it_is_the_only_signal() {
        assert_eq!(verdict(&Signals { nova: Some(&nova(true)), ..Signals::default() }).0, Verdict::Up);
        assert_eq!(verdict(&Signals { nova: Some(&nova(false)), ..Signals::default() }).0, Verdict::Down);
    }

    #[test]
    fn a_host_nova_does_not_list_is_unknown_not_down() {
        assert_eq!(verdict(&Signals::default()).0, Verdict::Unknown);
    }

    #[test]
    fn an_agent_that_answers_vetoes_a_down_from_nova() {
        let down = nova(false);
        let signals = Signals { nova: Some(&down), agent_alive: Some(true), bmc_powered_on: None };
        assert_eq!(verdict(&signals).0, Verdict::Unknown);
        let signals = Signals { nova: Some(&down), agent_alive: Some(false), bmc_powered_on: None };
        assert_eq!(verdict(&signals).0, Verdict::Down);
    }

    #[test]
    fn a_bmc_reading_power_off_is_down_whatever_nova_says() {
        let up = nova(true);
        let signals = Signals { nova: Some(&up), agent_alive: None, bmc_powered_on: Some(false) };
        assert_eq!(verdict(&signals).0, Verdict::Down);
    }
}
