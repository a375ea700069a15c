//! The planner: which servers to live-migrate where so that no host of an aggregate is loaded.
//! Pure (no I/O); docs/adr/0014-balancing.md explains the algorithm and the rejected options.
//!
//! Load (DESIGN.md §4, the reference's semantics): a host's load is its used RAM over its RAM
//! capacity; the aggregate's is Σ used / Σ capacity; a host is *loaded* when its load exceeds
//! the aggregate's + `approx`. With `vcpu_weight` w > 0 both loads become
//! (RAM share + w · vCPU share) / (1 + w); w = 0 is the reference exactly. Moving servers
//! inside the aggregate does not change the aggregate's load, so the threshold is fixed.
//!
//! Plan shape: migrations only go from loaded hosts (sources) to hosts that are not loaded
//! (targets), each server at most once. Sources only lose and targets only gain, so however
//! the migrations interleave at run time, no intermediate state exceeds the final one on any
//! target: capacity, the band and anti-affinity hold at every step, not just at the end.
//!
//! Objective, in order: every host inside the band; the fewest migrations; the fewest MB
//! moved. Hard constraints: RAM and vCPU capacity of targets, anti-affinity
//! (`max_server_per_host`), no target pushed above the threshold, pinned servers and
//! affinity-group members stay.
//!
//! Algorithm: sources are taken by decreasing excess. For each, the fewest servers whose
//! removal brings it into the band is the shortest prefix of its servers sorted by size
//! (largest first); among selections of that count the planner picks small servers where the
//! rest can still cover the excess (fewer MB). The selection is placed largest first on the
//! target with the most room (or, in a second pass when the first leaves a host loaded, the
//! tightest room that fits); a server that fits nowhere is dropped from the candidates and the
//! selection redone. When a pass leaves a host loaded, the other placement is tried, and then
//! the sources are reordered with the unrelieved hosts first (they get the targets' room before
//! hosts that had other choices), a few rounds; the best plan found is returned.

use std::collections::{BTreeSet, HashMap};

use crate::model::{BalanceInput, GroupPolicy, HostReport, Plan, PlanError, PlannedMigration, PlannerSettings};

/// Loads are compared with this tolerance, so that a host exactly at the threshold (in exact
/// arithmetic) is not loaded because of rounding.
const EPSILON: f64 = 1e-9;

/// Plans the live migrations that bring every host of `input` inside the band.
///
/// Always returns a plan when the input is valid; a plan that cannot bring a host into the
/// band (its servers are pinned, or fit nowhere) moves what helps and reports the host as
/// still loaded ([`Plan::still_loaded`]).
pub fn plan(input: &BalanceInput, settings: &PlannerSettings) -> Result<Plan, PlanError> {
    let problem = Problem::new(input, settings)?;
    let mut order = problem.sources();
    let mut best: Option<(Outcome, Solution)> = None;
    for _round in 0..=REORDER_ROUNDS {
        for fit in [Fit::Widest, Fit::Tightest] {
            let solution = problem.solve(fit, &order);
            let outcome = solution.outcome(&problem);
            if best.as_ref().is_none_or(|(best, _)| outcome < *best) {
                best = Some((outcome, solution));
            }
            if best.as_ref().is_some_and(|(best, _)| best.still_loaded == 0) {
                break;
            }
        }
        let Some((outcome, solution)) = &best else { break };
        if outcome.still_loaded == 0 {
            break;
        }
        // The hosts the best plan so far could not relieve go first next round: they get the
        // targets' room before the hosts that had other choices.
        let (mut first, rest): (Vec<usize>, Vec<usize>) = order
            .iter()
            .partition(|&&host| problem.is_loaded(host, solution.ram_used[host], solution.vcpus_used[host]));
        first.extend(rest);
        if first == order {
            break;
        }
        order = first;
    }
    let (outcome, mut solution) = best.expect("at least one pass ran");
    if outcome.still_loaded > 0
        && let Some(exact) = problem.exact(EXACT_BUDGET)
        && exact.outcome(&problem) < outcome
    {
        solution = exact;
    }
    Ok(problem.report(&solution))
}

/// The bounded exact search runs only when the greedy leaves a host loaded and at most this
/// many movable servers sit on loaded hosts (a small aggregate).
const EXACT_MAX_CANDIDATES: usize = 40;

/// Nodes the exact search may visit before it gives up (and the greedy's plan stands).
const EXACT_BUDGET: usize = 200_000;

/// (server, source, target) in order.
type Migrations = Vec<(usize, usize, usize)>;

/// The bounded exact search's bookkeeping.
struct Search {
    nodes: usize,
    budget: usize,
    /// The best complete plan found: (migrations, MB moved).
    best: Option<(Migrations, u64)>,
}

/// How many times the sources are reordered (the unrelieved ones first) when a pass leaves a
/// host loaded.
const REORDER_ROUNDS: usize = 3;

/// Where a server goes among the targets it fits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// The most RAM headroom: spreads the load, leaves targets far from the threshold.
    Widest,
    /// The least RAM headroom that fits: keeps large holes for large servers.
    Tightest,
}

/// The input as indices and numbers.
struct Problem<'a> {
    input: &'a BalanceInput,
    weight: f64,
    threshold: f64,
    ram_load: f64,
    vcpu_load: f64,
    aggregate_load: f64,
    /// Per host: RAM and vCPU capacity.
    ram_capacity: Vec<u64>,
    vcpu_capacity: Vec<u64>,
    /// Per host: the servers balancing may move.
    movable_on: Vec<Vec<usize>>,
    /// Per server: the anti-affinity groups it is in.
    anti_affinity_of: Vec<Vec<usize>>,
    /// Per anti-affinity group index: members allowed per host.
    group_limit: Vec<u32>,
    /// (group, host) → members there, before any migration.
    initial_group_counts: HashMap<(usize, usize), u32>,
}

/// One candidate solution.
struct Solution {
    ram_used: Vec<u64>,
    vcpus_used: Vec<u64>,
    /// (server, source, target) in order.
    migrations: Vec<(usize, usize, usize)>,
}

/// How good a solution is: compared lexicographically, smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Outcome {
    still_loaded: usize,
    /// Σ over loaded hosts of the RAM-equivalent MB above the threshold.
    excess: f64,
    migrations: usize,
    moved_ram_mb: u64,
}

impl<'a> Problem<'a> {
    fn new(input: &'a BalanceInput, settings: &PlannerSettings) -> Result<Self, PlanError> {
        if !settings.approx.is_finite() || !(0.0..=1.0).contains(&settings.approx) {
            return Err(PlanError::invalid("[balancing] approx", format!("{} is not in 0..=1", settings.approx)));
        }
        if !settings.vcpu_weight.is_finite() || settings.vcpu_weight < 0.0 {
            return Err(PlanError::invalid(
                "[balancing] vcpu_weight",
                format!("{} is not a finite number >= 0", settings.vcpu_weight),
            ));
        }
        let mut host_index: HashMap<&str, usize> = HashMap::with_capacity(input.hosts.len());
        for (index, host) in input.hosts.iter().enumerate() {
            if host.ram_mb.capacity == 0 {
                return Err(PlanError::invalid(
                    format!("hosts[{index}] ({}).ram_mb.capacity", host.name),
                    "a host without MEMORY_MB capacity cannot be balanced",
                ));
            }
            if host_index.insert(host.name.as_str(), index).is_some() {
                return Err(PlanError::invalid(
                    format!("hosts[{index}].name"),
                    format!("{} is listed twice", host.name),
                ));
            }
        }
        let mut server_index: HashMap<&str, usize> = HashMap::with_capacity(input.servers.len());
        let mut server_host = Vec::with_capacity(input.servers.len());
        for (index, server) in input.servers.iter().enumerate() {
            let Some(&host) = host_index.get(server.host.as_str()) else {
                return Err(PlanError::invalid(
                    format!("servers[{index}] ({}).host", server.id),
                    format!("{} is not one of the hosts", server.host),
                ));
            };
            if server_index.insert(server.id.as_str(), index).is_some() {
                return Err(PlanError::invalid(
                    format!("servers[{index}].id"),
                    format!("{} is listed twice", server.id),
                ));
            }
            server_host.push(host);
        }

        let mut pinned_by_affinity = vec![false; input.servers.len()];
        let mut anti_affinity_of: Vec<Vec<usize>> = vec![Vec::new(); input.servers.len()];
        let mut group_limit = Vec::new();
        let mut initial_group_counts: HashMap<(usize, usize), u32> = HashMap::new();
        for group in &input.groups {
            let members: Vec<usize> =
                group.members.iter().filter_map(|id| server_index.get(id.as_str()).copied()).collect();
            match group.policy {
                GroupPolicy::Affinity if members.len() > 1 => {
                    for &member in &members {
                        pinned_by_affinity[member] = true;
                    }
                }
                GroupPolicy::AntiAffinity => {
                    let group_index = group_limit.len();
                    group_limit.push(group.max_server_per_host.max(1));
                    for &member in &members {
                        anti_affinity_of[member].push(group_index);
                        *initial_group_counts.entry((group_index, server_host[member])).or_default() += 1;
                    }
                }
                _ => {}
            }
        }

        let mut movable_on = vec![Vec::new(); input.hosts.len()];
        for (index, server) in input.servers.iter().enumerate() {
            if server.pinned.is_none() && !pinned_by_affinity[index] {
                movable_on[server_host[index]].push(index);
            }
        }

        let ram_capacity: Vec<u64> = input.hosts.iter().map(|host| host.ram_mb.capacity).collect();
        let vcpu_capacity: Vec<u64> = input.hosts.iter().map(|host| host.vcpus.capacity).collect();
        let ram_load = ratio(input.hosts.iter().map(|h| h.ram_mb.used).sum(), ram_capacity.iter().sum());
        let vcpu_load = ratio(input.hosts.iter().map(|h| h.vcpus.used).sum(), vcpu_capacity.iter().sum());
        let weight = settings.vcpu_weight;
        let aggregate_load = (ram_load + weight * vcpu_load) / (1.0 + weight);
        Ok(Self {
            input,
            weight,
            threshold: aggregate_load + settings.approx,
            ram_load,
            vcpu_load,
            aggregate_load,
            ram_capacity,
            vcpu_capacity,
            movable_on,
            anti_affinity_of,
            group_limit,
            initial_group_counts,
        })
    }

    /// A host's load with `ram` MB and `vcpus` used.
    fn load(&self, host: usize, ram: u64, vcpus: u64) -> f64 {
        let ram_share = ram as f64 / self.ram_capacity[host] as f64;
        if self.weight == 0.0 {
            return ram_share;
        }
        let vcpu_share = ratio(vcpus, self.vcpu_capacity[host]);
        (ram_share + self.weight * vcpu_share) / (1.0 + self.weight)
    }

    fn is_loaded(&self, host: usize, ram: u64, vcpus: u64) -> bool {
        self.load(host, ram, vcpus) > self.threshold + EPSILON
    }

    /// What moving `server` off `host` takes from the host's load.
    fn contribution(&self, server: usize, host: usize) -> f64 {
        let server = &self.input.servers[server];
        let ram_share = server.ram_mb as f64 / self.ram_capacity[host] as f64;
        if self.weight == 0.0 {
            return ram_share;
        }
        (ram_share + self.weight * ratio(server.vcpus, self.vcpu_capacity[host])) / (1.0 + self.weight)
    }

    /// The RAM a target can still take before reaching the threshold or its capacity (an
    /// upper bound when vCPUs are weighted: the exact test is [`State::fits`]). The key the
    /// targets are ordered by.
    fn ram_headroom(&self, host: usize, ram: u64, vcpus: u64) -> i64 {
        let capacity = self.ram_capacity[host] as f64;
        let vcpu_share = if self.weight == 0.0 { 0.0 } else { ratio(vcpus, self.vcpu_capacity[host]) };
        let band = capacity * (self.threshold * (1.0 + self.weight) - self.weight * vcpu_share) - ram as f64;
        let room = self.ram_capacity[host].saturating_sub(ram) as f64;
        // The same tolerance as `is_loaded`, in MB of this host.
        (band + EPSILON * capacity).min(room).floor() as i64
    }

    /// The loaded hosts, by decreasing excess (MB over the threshold).
    fn sources(&self) -> Vec<usize> {
        let hosts = &self.input.hosts;
        let mut sources: Vec<(f64, usize)> = (0..hosts.len())
            .filter(|&host| self.is_loaded(host, hosts[host].ram_mb.used, hosts[host].vcpus.used))
            .map(|host| {
                let excess = self.load(host, hosts[host].ram_mb.used, hosts[host].vcpus.used) - self.threshold;
                (excess * self.ram_capacity[host] as f64, host)
            })
            .collect();
        sources.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        sources.into_iter().map(|(_, host)| host).collect()
    }

    /// One pass: relieves `sources` in this order onto every other host.
    fn solve(&self, fit: Fit, sources: &[usize]) -> Solution {
        let mut state = State::new(self);
        let mut is_source = vec![false; self.input.hosts.len()];
        for &source in sources {
            is_source[source] = true;
        }
        for (host, _) in is_source.iter().enumerate().filter(|(_, source)| !**source) {
            state.add_target(self, host);
        }
        for &source in sources {
            self.relieve(&mut state, source, fit);
        }
        Solution { ram_used: state.ram_used, vcpus_used: state.vcpus_used, migrations: state.migrations }
    }

    /// Moves the fewest (then smallest) servers off `source` that bring it into the band, or
    /// as many as fit somewhere when nothing does.
    fn relieve(&self, state: &mut State, source: usize, fit: Fit) {
        let mut candidates: Vec<(f64, usize)> =
            self.movable_on[source].iter().map(|&server| (self.contribution(server, source), server)).collect();
        candidates.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| self.input.servers[b.1].ram_mb.cmp(&self.input.servers[a.1].ram_mb))
                .then_with(|| self.input.servers[a.1].id.cmp(&self.input.servers[b.1].id))
        });
        loop {
            let need = self.load(source, state.ram_used[source], state.vcpus_used[source]) - self.threshold;
            if need <= EPSILON || candidates.is_empty() {
                return;
            }
            let sizes: Vec<f64> = candidates.iter().map(|&(size, _)| size).collect();
            let chosen = select(&sizes, need);
            let mut placed = Vec::with_capacity(chosen.len());
            let mut unplaceable = None;
            for &position in &chosen {
                let server = candidates[position].1;
                match state.find_target(self, server, fit) {
                    Some(target) => {
                        state.apply(self, server, source, target);
                        placed.push((server, target));
                    }
                    None => {
                        unplaceable = Some(position);
                        break;
                    }
                }
            }
            match unplaceable {
                None => {
                    state.migrations.extend(placed.into_iter().map(|(server, target)| (server, source, target)));
                    return;
                }
                Some(position) => {
                    for (server, target) in placed.into_iter().rev() {
                        state.apply(self, server, target, source);
                    }
                    candidates.remove(position);
                }
            }
        }
    }

    /// Branch and bound over the plan shape (loaded → not loaded, each server once): for each
    /// movable server of a loaded host, largest first, move it to a target it fits on or leave
    /// it; a branch is cut when a loaded host cannot be relieved by its remaining servers or
    /// when the fewest migrations it still needs (per host, its largest remaining servers)
    /// cannot beat the best plan found. Returns the plan with every host inside the band and
    /// the fewest migrations (then MB) found within `budget` nodes, or `None`. Run only when
    /// the greedy leaves a host loaded on a small aggregate.
    fn exact(&self, budget: usize) -> Option<Solution> {
        let sources = self.sources();
        let mut is_source = vec![false; self.input.hosts.len()];
        let mut candidates = Vec::new();
        for &source in &sources {
            is_source[source] = true;
            let mut movable = self.movable_on[source].clone();
            movable.sort_by(|&a, &b| self.contribution(b, source).total_cmp(&self.contribution(a, source)));
            candidates.extend(movable.into_iter().map(|server| (server, source)));
        }
        if sources.is_empty() || candidates.len() > EXACT_MAX_CANDIDATES {
            return None;
        }
        let targets: Vec<usize> = (0..self.input.hosts.len()).filter(|&host| !is_source[host]).collect();
        let mut state = State::new(self);
        let mut search = Search { nodes: 0, budget, best: None };
        self.branch(&mut state, &candidates, 0, &sources, &targets, &mut search);
        let (migrations, _) = search.best?;
        let mut state = State::new(self);
        for &(server, source, target) in &migrations {
            state.apply(self, server, source, target);
        }
        Some(Solution { ram_used: state.ram_used, vcpus_used: state.vcpus_used, migrations })
    }

    fn branch(
        &self,
        state: &mut State,
        candidates: &[(usize, usize)],
        index: usize,
        sources: &[usize],
        targets: &[usize],
        search: &mut Search,
    ) {
        search.nodes += 1;
        if search.nodes > search.budget {
            return;
        }
        let mut still_needed = 0;
        for &source in sources {
            let need = self.load(source, state.ram_used[source], state.vcpus_used[source]) - self.threshold;
            if need <= EPSILON {
                continue;
            }
            let (mut covered, mut count) = (0.0, 0);
            for &(server, _) in candidates[index..].iter().filter(|(_, of)| *of == source) {
                covered += self.contribution(server, source);
                count += 1;
                if covered >= need - EPSILON {
                    break;
                }
            }
            if covered < need - EPSILON {
                return;
            }
            still_needed += count;
        }
        let moved = state.migrations.len();
        if search.best.as_ref().is_some_and(|(best, _)| moved + still_needed > best.len()) {
            return;
        }
        if still_needed == 0 {
            let megabytes: u64 = state.migrations.iter().map(|&(server, _, _)| self.input.servers[server].ram_mb).sum();
            if search.best.as_ref().is_none_or(|(best, best_mb)| (moved, megabytes) < (best.len(), *best_mb)) {
                search.best = Some((state.migrations.clone(), megabytes));
            }
            return;
        }
        let Some(&(server, source)) = candidates.get(index) else { return };
        if self.is_loaded(source, state.ram_used[source], state.vcpus_used[source]) {
            let mut options: Vec<usize> =
                targets.iter().copied().filter(|&target| state.fits(self, server, target)).collect();
            options.sort_by_key(|&target| {
                std::cmp::Reverse(self.ram_headroom(target, state.ram_used[target], state.vcpus_used[target]))
            });
            for target in options {
                state.apply(self, server, source, target);
                state.migrations.push((server, source, target));
                self.branch(state, candidates, index + 1, sources, targets, search);
                state.migrations.pop();
                state.apply(self, server, target, source);
                if search.nodes > search.budget {
                    return;
                }
            }
        }
        self.branch(state, candidates, index + 1, sources, targets, search);
    }

    fn outcome_of(&self, ram_used: &[u64], vcpus_used: &[u64], migrations: &[(usize, usize, usize)]) -> Outcome {
        let mut still_loaded = 0;
        let mut excess = 0.0;
        for host in 0..self.input.hosts.len() {
            if self.is_loaded(host, ram_used[host], vcpus_used[host]) {
                still_loaded += 1;
                excess += (self.load(host, ram_used[host], vcpus_used[host]) - self.threshold)
                    * self.ram_capacity[host] as f64;
            }
        }
        Outcome {
            still_loaded,
            excess,
            migrations: migrations.len(),
            moved_ram_mb: migrations.iter().map(|&(server, _, _)| self.input.servers[server].ram_mb).sum(),
        }
    }

    fn report(&self, solution: &Solution) -> Plan {
        let servers = &self.input.servers;
        let hosts = &self.input.hosts;
        let migrations = solution
            .migrations
            .iter()
            .map(|&(server, source, target)| PlannedMigration {
                server_id: servers[server].id.clone(),
                server_name: servers[server].name.clone(),
                source: hosts[source].name.clone(),
                target: hosts[target].name.clone(),
                ram_mb: servers[server].ram_mb,
                vcpus: servers[server].vcpus,
            })
            .collect();
        let hosts = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                let (ram_after, vcpus_after) = (solution.ram_used[index], solution.vcpus_used[index]);
                HostReport {
                    name: host.name.clone(),
                    ram_mb: host.ram_mb,
                    vcpus: host.vcpus,
                    ram_used_after: ram_after,
                    vcpus_used_after: vcpus_after,
                    load_before: self.load(index, host.ram_mb.used, host.vcpus.used),
                    load_after: self.load(index, ram_after, vcpus_after),
                    loaded_before: self.is_loaded(index, host.ram_mb.used, host.vcpus.used),
                    loaded_after: self.is_loaded(index, ram_after, vcpus_after),
                }
            })
            .collect();
        Plan {
            aggregate: self.input.aggregate.clone(),
            ram_load: self.ram_load,
            vcpu_load: self.vcpu_load,
            aggregate_load: self.aggregate_load,
            threshold: self.threshold,
            migrations,
            hosts,
        }
    }
}

impl Solution {
    fn outcome(&self, problem: &Problem<'_>) -> Outcome {
        problem.outcome_of(&self.ram_used, &self.vcpus_used, &self.migrations)
    }
}

/// The hosts' usage while a solution is built.
struct State {
    ram_used: Vec<u64>,
    vcpus_used: Vec<u64>,
    group_counts: HashMap<(usize, usize), u32>,
    /// Targets by (RAM headroom, host).
    targets: BTreeSet<(i64, usize)>,
    /// Per host: its key in `targets`, when it is a target.
    target_key: Vec<Option<i64>>,
    migrations: Vec<(usize, usize, usize)>,
}

impl State {
    fn new(problem: &Problem<'_>) -> Self {
        Self {
            ram_used: problem.input.hosts.iter().map(|host| host.ram_mb.used).collect(),
            vcpus_used: problem.input.hosts.iter().map(|host| host.vcpus.used).collect(),
            group_counts: problem.initial_group_counts.clone(),
            targets: BTreeSet::new(),
            target_key: vec![None; problem.input.hosts.len()],
            migrations: Vec::new(),
        }
    }

    fn add_target(&mut self, problem: &Problem<'_>, host: usize) {
        let key = problem.ram_headroom(host, self.ram_used[host], self.vcpus_used[host]);
        self.targets.insert((key, host));
        self.target_key[host] = Some(key);
    }

    /// Re-files a target after its usage changed.
    fn refresh_target(&mut self, problem: &Problem<'_>, host: usize) {
        if let Some(old) = self.target_key[host] {
            self.targets.remove(&(old, host));
            self.add_target(problem, host);
        }
    }

    /// Whether `server` may go to `target` now: capacity, the band, anti-affinity.
    fn fits(&self, problem: &Problem<'_>, server: usize, target: usize) -> bool {
        let size = &problem.input.servers[server];
        let ram = self.ram_used[target] + size.ram_mb;
        let vcpus = self.vcpus_used[target] + size.vcpus;
        ram <= problem.ram_capacity[target]
            && vcpus <= problem.vcpu_capacity[target]
            && !problem.is_loaded(target, ram, vcpus)
            && problem.anti_affinity_of[server].iter().all(|&group| {
                self.group_counts.get(&(group, target)).copied().unwrap_or(0) < problem.group_limit[group]
            })
    }

    fn find_target(&self, problem: &Problem<'_>, server: usize, fit: Fit) -> Option<usize> {
        let ram = problem.input.servers[server].ram_mb as i64;
        match fit {
            Fit::Widest => self
                .targets
                .iter()
                .rev()
                .take_while(|&&(headroom, _)| headroom >= ram)
                .map(|&(_, host)| host)
                .find(|&host| self.fits(problem, server, host)),
            Fit::Tightest => {
                self.targets.range((ram, 0)..).map(|&(_, host)| host).find(|&host| self.fits(problem, server, host))
            }
        }
    }

    /// Moves `server` from `from` to `to` in the bookkeeping (also used to undo a move).
    fn apply(&mut self, problem: &Problem<'_>, server: usize, from: usize, to: usize) {
        let size = &problem.input.servers[server];
        self.ram_used[from] -= size.ram_mb;
        self.vcpus_used[from] -= size.vcpus;
        self.ram_used[to] += size.ram_mb;
        self.vcpus_used[to] += size.vcpus;
        for &group in &problem.anti_affinity_of[server] {
            if let Some(count) = self.group_counts.get_mut(&(group, from)) {
                *count -= 1;
            }
            *self.group_counts.entry((group, to)).or_default() += 1;
        }
        self.refresh_target(problem, from);
        self.refresh_target(problem, to);
    }
}

/// Positions in `sizes` (sorted largest first) of the fewest items whose sum reaches `need`,
/// preferring small items among selections of that count; every position when even all of
/// them do not reach it.
///
/// The count k is the shortest prefix reaching `need`. Slots are then filled left to right,
/// each with the smallest item that still lets the k − j − 1 largest items after it cover what
/// remains (the sum of a window of k − j items starting at p does not increase with p, so the
/// last p whose window covers the rest is found by binary search).
fn select(sizes: &[f64], need: f64) -> Vec<usize> {
    let mut prefix = Vec::with_capacity(sizes.len() + 1);
    prefix.push(0.0);
    for size in sizes {
        prefix.push(prefix[prefix.len() - 1] + size);
    }
    let Some(count) = (1..=sizes.len()).find(|&k| prefix[k] >= need - EPSILON) else {
        return (0..sizes.len()).collect();
    };
    let mut chosen = Vec::with_capacity(count);
    let mut remaining = need;
    let mut start = 0;
    for slot in 0..count {
        let after = count - slot - 1;
        let window = |p: usize| prefix[p + after + 1] - prefix[p];
        // The largest p in start..=last with window(p) >= remaining; window(start) does by
        // construction.
        let (mut low, mut high) = (start, sizes.len() - after - 1);
        while low < high {
            let middle = (low + high).div_ceil(2);
            if window(middle) >= remaining - EPSILON { low = middle } else { high = middle - 1 }
        }
        chosen.push(low);
        remaining -= sizes[low];
        start = low + 1;
    }
    chosen
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Capacity, Host, Server, ServerGroup};

    fn host(name: &str, capacity: u64, used: u64) -> Host {
        Host { name: name.into(), ram_mb: Capacity { capacity, used }, vcpus: Capacity { capacity: 64, used: 0 } }
    }

    fn server(id: &str, host: &str, ram_mb: u64) -> Server {
        Server { id: id.into(), name: id.into(), host: host.into(), ram_mb, vcpus: 1, pinned: None }
    }

    /// Hosts' `used` from their servers (RAM and vCPUs).
    fn input(mut hosts: Vec<Host>, servers: Vec<Server>, groups: Vec<ServerGroup>) -> BalanceInput {
        for host in &mut hosts {
            host.ram_mb.used = servers.iter().filter(|s| s.host == host.name).map(|s| s.ram_mb).sum();
            host.vcpus.used = servers.iter().filter(|s| s.host == host.name).map(|s| s.vcpus).sum();
        }
        BalanceInput { aggregate: "agg".into(), hosts, servers, groups }
    }

    fn moves(plan: &Plan) -> Vec<(&str, &str, &str)> {
        plan.migrations.iter().map(|m| (m.server_id.as_str(), m.source.as_str(), m.target.as_str())).collect()
    }

    /// DESIGN.md §4 / the reference documentation: two nodes of 4086 MB, 3072 and 256 MB
    /// used, approx 0.1. (The docs call the total 8192 and round the total load to 0.40; with
    /// the real total 8172 it is 0.407, which changes no verdict.)
    #[test]
    fn worked_example_of_the_reference_documentation() {
        let example = input(
            vec![host("node-1", 4086, 0), host("node-2", 4086, 0)],
            vec![
                server("a", "node-1", 1024),
                server("b", "node-1", 1024),
                server("c", "node-1", 1024),
                server("d", "node-2", 256),
            ],
            vec![],
        );
        let plan = plan(&example, &PlannerSettings { approx: 0.1, vcpu_weight: 0.0 }).unwrap();
        assert!((plan.ram_load - 3328.0 / 8172.0).abs() < 1e-12);
        assert!((plan.ram_load - 0.40).abs() < 0.01, "total load {}", plan.ram_load);
        assert!((plan.hosts[0].load_before - 0.75).abs() < 0.01);
        assert!((plan.hosts[1].load_before - 0.06).abs() < 0.01);
        assert!(plan.hosts[0].loaded_before, "0.75 > 0.40 + 0.1: node 1 is loaded");
        assert!(!plan.hosts[1].loaded_before, "0.06 < 0.40 + 0.1: node 2 is not");
        // One 1 GiB server brings node 1 to 2048/4086 = 0.50 <= 0.507; node 2 gets 0.31.
        assert_eq!(moves(&plan).len(), 1);
        assert_eq!((plan.migrations[0].source.as_str(), plan.migrations[0].target.as_str()), ("node-1", "node-2"));
        assert!(plan.is_balanced());
        assert_eq!(plan.hosts[0].ram_used_after, 2048);
        assert_eq!(plan.hosts[1].ram_used_after, 1280);
    }

    #[test]
    fn a_move_that_would_load_the_target_is_replaced_by_two_smaller_ones() {
        // Node 1 needs >= 1000 MB off. The one server that suffices (2048) would load node 2
        // (2304/4086 = 0.56 > 0.507); two 512s do it without.
        let example = input(
            vec![host("node-1", 4086, 0), host("node-2", 4086, 0)],
            vec![
                server("big", "node-1", 2048),
                server("s1", "node-1", 512),
                server("s2", "node-1", 512),
                server("d", "node-2", 256),
            ],
            vec![],
        );
        let plan = plan(&example, &PlannerSettings::default()).unwrap();
        let mut moved: Vec<&str> = moves(&plan).iter().map(|m| m.0).collect();
        moved.sort();
        assert_eq!(moved, ["s1", "s2"]);
        assert!(plan.is_balanced());
        assert!(plan.hosts[1].load_after <= plan.threshold);
    }

    #[test]
    fn fewest_migrations_first_then_fewest_megabytes() {
        // Loads 0.9 and 0.1, threshold 0.5 + 0.1: >= 3000 MB must leave node 1. No single
        // server does; of the pairs that do, 1500 + 1500 moves the least.
        let example = input(
            vec![host("node-1", 10000, 0), host("node-2", 10000, 0)],
            vec![
                server("a", "node-1", 2000),
                server("b", "node-1", 2000),
                server("c", "node-1", 1500),
                server("d", "node-1", 1000),
                server("e", "node-1", 1000),
                server("f", "node-1", 1500),
                server("g", "node-2", 1000),
            ],
            vec![],
        );
        let plan = plan(&example, &PlannerSettings::default()).unwrap();
        assert!(plan.is_balanced());
        assert_eq!(plan.migrations.len(), 2);
        assert_eq!(plan.moved_ram_mb(), 3000);
    }

    #[test]
    fn anti_affinity_members_never_share_a_target() {
        // node-1 overloaded with two members of an anti-affinity group; node-2 already has
        // the third member, node-3 has none: only one member may go to node-3.
        let mut example = input(
            vec![host("node-1", 4000, 0), host("node-2", 4000, 0), host("node-3", 4000, 0)],
            vec![
                server("m1", "node-1", 1500),
                server("m2", "node-1", 1500),
                server("x", "node-1", 500),
                server("m3", "node-2", 500),
            ],
            vec![],
        );
        example.groups.push(ServerGroup {
            id: "g".into(),
            name: "g".into(),
            policy: GroupPolicy::AntiAffinity,
            members: vec!["m1".into(), "m2".into(), "m3".into()],
            max_server_per_host: 1,
        });
        let plan = plan(&example, &PlannerSettings::default()).unwrap();
        for migration in &plan.migrations {
            if migration.server_id.starts_with('m') {
                assert_eq!(migration.target, "node-3", "{migration:?}");
            }
        }
        assert!(plan.migrations.iter().filter(|m| m.target == "node-3" && m.server_id.starts_with('m')).count() <= 1);
    }

    #[test]
    fn pinned_servers_and_affinity_members_stay_and_the_host_is_reported() {
        let mut example = input(
            vec![host("node-1", 4000, 0), host("node-2", 4000, 0)],
            vec![server("a1", "node-1", 1500), server("a2", "node-1", 1500), server("p", "node-1", 500)],
            vec![ServerGroup {
                id: "g".into(),
                name: "g".into(),
                policy: GroupPolicy::Affinity,
                members: vec!["a1".into(), "a2".into()],
                max_server_per_host: 1,
            }],
        );
        example.servers[2].pinned = Some("on the deny list".into());
        let plan = plan(&example, &PlannerSettings::default()).unwrap();
        assert!(plan.migrations.is_empty());
        assert_eq!(plan.still_loaded().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["node-1"]);
    }

    #[test]
    fn vcpu_capacity_of_the_target_is_never_exceeded() {
        // node-1 must shed >= 1734 MB; its 2 GB server needs 32 vCPUs and the targets have 16,
        // so only the 1.2 GB one moves (the host stays loaded, and is reported so).
        let mut example = input(
            vec![host("node-1", 4000, 0), host("node-2", 4000, 0), host("node-3", 4000, 0)],
            vec![server("cpu-heavy", "node-1", 2000), server("light", "node-1", 1200)],
            vec![],
        );
        example.servers[0].vcpus = 32;
        example.hosts[0].vcpus.used = 33;
        example.hosts[1].vcpus.capacity = 16;
        example.hosts[2].vcpus.capacity = 16;
        let plan = plan(&example, &PlannerSettings::default()).unwrap();
        let moved: Vec<(&str, &str)> =
            plan.migrations.iter().map(|m| (m.server_id.as_str(), m.source.as_str())).collect();
        assert_eq!(moved, [("light", "node-1")]);
        assert!(plan.hosts[1..].iter().all(|h| h.vcpus_used_after <= h.vcpus.capacity));
        assert_eq!(plan.still_loaded().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["node-1"]);
    }

    #[test]
    fn vcpu_weight_makes_a_cpu_crowded_host_loaded() {
        // Equal RAM shares, but node-1 has 30 of 32 vCPUs allocated and node-2 2.
        let mut example = input(
            vec![host("node-1", 4000, 0), host("node-2", 4000, 0)],
            vec![
                server("a", "node-1", 1000),
                server("b", "node-1", 1000),
                server("c", "node-2", 1000),
                server("d", "node-2", 1000),
            ],
            vec![],
        );
        for (server, vcpus) in example.servers.iter_mut().zip([14, 16, 1, 1]) {
            server.vcpus = vcpus;
        }
        for host in &mut example.hosts {
            host.vcpus.capacity = 32;
        }
        example.hosts[0].vcpus.used = 30;
        example.hosts[1].vcpus.used = 2;
        let ram_only = plan(&example, &PlannerSettings { approx: 0.2, vcpu_weight: 0.0 }).unwrap();
        assert!(ram_only.migrations.is_empty(), "RAM alone is balanced");
        // Weighted 1:1: node-1 (0.5 + 30/32) / 2 = 0.72 > 0.5 + 0.2; moving `a` (14 vCPUs)
        // leaves it 0.375 and node-2 (0.75 + 16/32) / 2 = 0.625.
        let weighted = plan(&example, &PlannerSettings { approx: 0.2, vcpu_weight: 1.0 }).unwrap();
        assert!(weighted.hosts[0].loaded_before);
        assert!(weighted.is_balanced());
        assert_eq!(weighted.migrations.len(), 1);
        assert_eq!(weighted.migrations[0].server_id, "a");
    }

    #[test]
    fn invalid_input_names_the_field() {
        let example = input(vec![host("node-1", 0, 0)], vec![], vec![]);
        let error = plan(&example, &PlannerSettings::default()).unwrap_err();
        assert!(error.to_string().contains("hosts[0] (node-1).ram_mb.capacity"), "{error}");
        let example = input(vec![host("node-1", 100, 0)], vec![server("a", "elsewhere", 1)], vec![]);
        let error = plan(&example, &PlannerSettings::default()).unwrap_err();
        assert!(error.to_string().contains("servers[0] (a).host"), "{error}");
        let error = plan(&example, &PlannerSettings { approx: 1.5, vcpu_weight: 0.0 }).unwrap_err();
        assert!(error.to_string().contains("[balancing] approx"), "{error}");
        let error = plan(&example, &PlannerSettings { approx: 0.1, vcpu_weight: f64::NAN }).unwrap_err();
        assert!(error.to_string().contains("[balancing] vcpu_weight"), "{error}");
    }

    #[test]
    fn select_takes_the_fewest_then_the_smallest() {
        assert_eq!(select(&[5.0, 4.0, 3.0, 2.0, 1.0], 6.0), [1, 3]);
        assert_eq!(select(&[5.0, 4.0, 3.0, 2.0, 1.0], 3.0), [2]);
        assert_eq!(select(&[5.0, 4.0, 3.0, 2.0, 1.0], 8.5), [0, 1]);
        assert_eq!(select(&[3.0, 3.0, 3.0], 10.0), [0, 1, 2]);
        assert_eq!(select(&[2.0, 2.0, 2.0, 2.0], 4.0), [2, 3]);
    }
}
