//! Checking a planned migration against the cloud as it is now, just before it starts.
//!
//! A plan is made from one look at Placement; by the time a migration of it starts (minutes
//! later, or after a worker died and another resumed the task) the cloud may have changed:
//! servers booted on the target, deleted from the source, a host went down. Before each live
//! migration the executor re-reads the two hosts' Placement figures and asks [`check`]
//! whether the move still makes sense: the target can still take the server without
//! exceeding its capacity or the band, and the source is still loaded. When not, the
//! migration is skipped with the reason recorded, and the remainder is re-planned once from
//! fresh data (docs/adr/0014-balancing.md, "Re-planning").
//!
//! Pure: the figures come in, a verdict goes out.

use crate::model::{Capacity, Host, PlannedMigration, PlannerSettings};

/// Loads are compared with the planner's tolerance.
const EPSILON: f64 = 1e-9;

/// The aggregate's figures now: its hosts taken for balancing and the threshold above
/// which a host is loaded (moves inside the aggregate do not change it).
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub hosts: Vec<Host>,
    pub threshold: f64,
    pub vcpu_weight: f64,
}

impl Figures {
    /// The figures of `hosts` with the planner's settings (same definition of load as
    /// [`crate::plan`]).
    pub fn new(hosts: Vec<Host>, settings: &PlannerSettings) -> Self {
        let ram_used: u64 = hosts.iter().map(|host| host.ram_mb.used).sum();
        let ram_capacity: u64 = hosts.iter().map(|host| host.ram_mb.capacity).sum();
        let vcpus_used: u64 = hosts.iter().map(|host| host.vcpus.used).sum();
        let vcpu_capacity: u64 = hosts.iter().map(|host| host.vcpus.capacity).sum();
        let weight = settings.vcpu_weight;
        let aggregate_load =
            (ratio(ram_used, ram_capacity) + weight * ratio(vcpus_used, vcpu_capacity)) / (1.0 + weight);
        Self { hosts, threshold: aggregate_load + settings.approx, vcpu_weight: weight }
    }

    fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|host| host.name == name)
    }

    /// A host's load with these figures.
    pub fn load(&self, ram: Capacity, vcpus: Capacity) -> f64 {
        let ram_share = ratio(ram.used, ram.capacity);
        if self.vcpu_weight == 0.0 {
            return ram_share;
        }
        (ram_share + self.vcpu_weight * ratio(vcpus.used, vcpus.capacity)) / (1.0 + self.vcpu_weight)
    }
}

/// `Ok` when `planned` may start now; `Err` with the reason to skip it.
pub fn check(planned: &PlannedMigration, figures: &Figures) -> Result<(), String> {
    let Some(target) = figures.host(&planned.target) else {
        return Err(format!(
            "target {} is no longer a host of the aggregate taken for balancing (down, disabled, denied or gone)",
            planned.target
        ));
    };
    let ram_after = target.ram_mb.used + planned.ram_mb;
    if ram_after > target.ram_mb.capacity {
        return Err(format!(
            "target {} has no room any more: {} MB used + {} MB > {} MB capacity",
            planned.target, target.ram_mb.used, planned.ram_mb, target.ram_mb.capacity
        ));
    }
    let vcpus_after = target.vcpus.used + planned.vcpus;
    if target.vcpus.capacity > 0 && vcpus_after > target.vcpus.capacity {
        return Err(format!(
            "target {} has no vCPUs left: {} used + {} > {} capacity",
            planned.target, target.vcpus.used, planned.vcpus, target.vcpus.capacity
        ));
    }
    let load_after = figures.load(
        Capacity { capacity: target.ram_mb.capacity, used: ram_after },
        Capacity { capacity: target.vcpus.capacity, used: vcpus_after },
    );
    if load_after > figures.threshold + EPSILON {
        return Err(format!(
            "target {} would be loaded: load {load_after:.3} after the move > threshold {:.3}",
            planned.target, figures.threshold
        ));
    }
    let Some(source) = figures.host(&planned.source) else {
        return Err(format!(
            "source {} is no longer a host of the aggregate taken for balancing (down, disabled, denied or gone)",
            planned.source
        ));
    };
    let source_load = figures.load(source.ram_mb, source.vcpus);
    if source_load <= figures.threshold + EPSILON {
        return Err(format!(
            "source {} is no longer loaded: load {source_load:.3} <= threshold {:.3}",
            planned.source, figures.threshold
        ));
    }
    Ok(())
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, ram: (u64, u64), vcpus: (u64, u64)) -> Host {
        Host {
            name: name.into(),
            ram_mb: Capacity { capacity: ram.0, used: ram.1 },
            vcpus: Capacity { capacity: vcpus.0, used: vcpus.1 },
        }
    }

    fn migration(ram_mb: u64, vcpus: u64) -> PlannedMigration {
        PlannedMigration {
            server_id: "s".into(),
            server_name: "s".into(),
            source: "a".into(),
            target: "b".into(),
            ram_mb,
            vcpus,
        }
    }

    fn figures(a: (u64, u64), b: (u64, u64)) -> Figures {
        Figures::new(
            vec![host("a", a, (16, 0)), host("b", b, (16, 0)), host("c", (4096, 0), (16, 0))],
            &PlannerSettings::default(),
        )
    }

    #[test]
    fn a_move_that_still_fits_and_relieves_a_loaded_source_may_start() {
        // Aggregate load 3072 / 12288 = 0.25, threshold 0.35; a at 0.75 is loaded.
        let figures = figures((4096, 3072), (4096, 0));
        assert!((figures.threshold - 0.35).abs() < 1e-12);
        assert_eq!(check(&migration(1024, 1), &figures), Ok(()));
    }

    #[test]
    fn a_target_that_filled_meanwhile_is_named_with_its_figures() {
        // Someone booted 1400 MB on b since the plan: 1024 more would put it above 0.35.
        let figures = figures((4096, 3072), (4096, 1400));
        let reason = check(&migration(1024, 1), &figures).unwrap_err();
        assert!(reason.contains("target b would be loaded"), "{reason}");
        let full = Figures::new(
            vec![host("a", (4096, 4096), (16, 0)), host("b", (1024, 512), (16, 0))],
            &PlannerSettings { approx: 1.0, vcpu_weight: 0.0 },
        );
        let reason = check(&migration(1024, 1), &full).unwrap_err();
        assert!(reason.contains("target b has no room any more: 512 MB used + 1024 MB > 1024 MB"), "{reason}");
        let no_vcpus = Figures::new(
            vec![host("a", (4096, 3072), (4, 4)), host("b", (4096, 0), (4, 4))],
            &PlannerSettings { approx: 0.1, vcpu_weight: 0.0 },
        );
        let reason = check(&migration(64, 1), &no_vcpus).unwrap_err();
        assert!(reason.contains("target b has no vCPUs left"), "{reason}");
    }

    #[test]
    fn a_source_no_longer_loaded_or_a_host_gone_is_a_reason_to_skip() {
        // Servers were deleted from a: 512 / 4096 = 0.125 is not above 512 / 12288 + 0.1.
        let figures = figures((4096, 512), (4096, 0));
        let reason = check(&migration(256, 1), &figures).unwrap_err();
        assert!(reason.contains("source a is no longer loaded"), "{reason}");
        let gone = Figures::new(vec![host("a", (4096, 3072), (16, 0))], &PlannerSettings::default());
        let reason = check(&migration(512, 1), &gone).unwrap_err();
        assert!(reason.contains("target b is no longer a host"), "{reason}");
    }
}
