//! Property tests of the planner on random clouds that are known to have a solution.
//!
//! Construction: servers (with anti-affinity groups and some pinned servers) are first placed
//! on hosts so that no host is loaded and every constraint holds (the *solved* state). Then
//! some hosts are made victims: movable servers of the other hosts are moved onto them while
//! capacity and anti-affinity allow. Moving back what the loaded victims received is a
//! solution of the planner's kind (loaded → not loaded, each server once), because every other
//! host only lost load. So the planner must always end inside the band. Whatever the cloud, a
//! plan never breaks capacity, anti-affinity or the band on a target at any step, never
//! moves a server twice and never moves a pinned one.

use std::collections::{BTreeMap, BTreeSet};

use aos_balance::{BalanceInput, Capacity, GroupPolicy, Host, Plan, PlannerSettings, Server, ServerGroup, plan};
use proptest::prelude::*;

/// splitmix64: a small deterministic generator driven by proptest's seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Cloud {
    input: BalanceInput,
    /// Server index → host index in the solved state.
    solved: Vec<usize>,
}

/// Anti-affinity members of `group` on `host` under `placement`.
fn members_on(cloud: &BalanceInput, placement: &[usize], group: &ServerGroup, host: usize) -> u32 {
    group
        .members
        .iter()
        .filter(|id| cloud.servers.iter().position(|s| &s.id == *id).is_some_and(|index| placement[index] == host))
        .count() as u32
}

fn fits(cloud: &BalanceInput, placement: &[usize], server: usize, host: usize) -> bool {
    let ram: u64 = (0..placement.len()).filter(|&s| placement[s] == host).map(|s| cloud.servers[s].ram_mb).sum();
    let vcpus: u64 = (0..placement.len()).filter(|&s| placement[s] == host).map(|s| cloud.servers[s].vcpus).sum();
    let size = &cloud.servers[server];
    ram + size.ram_mb <= cloud.hosts[host].ram_mb.capacity
        && vcpus + size.vcpus <= cloud.hosts[host].vcpus.capacity
        && cloud
            .groups
            .iter()
            .filter(|g| g.members.contains(&size.id))
            .all(|group| members_on(cloud, placement, group, host) < group.max_server_per_host)
}

/// Sets each host's usage from `placement` (usize::MAX: the server was not placed).
fn apply_placement(cloud: &mut BalanceInput, placement: &[usize]) {
    for (index, host) in cloud.hosts.iter_mut().enumerate() {
        let on: Vec<&Server> =
            cloud.servers.iter().zip(placement).filter(|(_, h)| **h == index).map(|(s, _)| s).collect();
        host.ram_mb.used = on.iter().map(|s| s.ram_mb).sum();
        host.vcpus.used = on.iter().map(|s| s.vcpus).sum();
    }
    for (server, &host) in cloud.servers.iter_mut().zip(placement) {
        server.host = cloud.hosts[host].name.clone();
    }
}

/// A solved cloud: servers placed on the least loaded host (by RAM share) that takes them.
fn solved_cloud(random: &mut Random, hosts: usize, servers: usize) -> Cloud {
    let mut input = BalanceInput { aggregate: "prop".into(), ..BalanceInput::default() };
    for index in 0..hosts {
        input.hosts.push(Host {
            name: format!("host-{index}"),
            ram_mb: Capacity { capacity: random.pick(&[4096, 8192, 16384]), used: 0 },
            vcpus: Capacity { capacity: random.pick(&[16, 32, 64]), used: 0 },
        });
    }
    let group_count = random.below(4);
    for index in 0..group_count {
        input.groups.push(ServerGroup {
            id: format!("group-{index}"),
            name: format!("group-{index}"),
            policy: GroupPolicy::AntiAffinity,
            members: Vec::new(),
            max_server_per_host: random.pick(&[1, 1, 2]),
        });
    }
    for index in 0..servers {
        let id = format!("server-{index}");
        if group_count > 0 && random.chance(30) {
            let group = random.below(group_count);
            input.groups[group].members.push(id.clone());
        }
        input.servers.push(Server {
            id: id.clone(),
            name: id,
            host: String::new(),
            ram_mb: random.pick(&[256, 512, 1024, 2048, 4096]),
            vcpus: random.pick(&[1, 2, 4, 8]),
            pinned: random.chance(10).then(|| "pinned by the test".to_owned()),
        });
    }
    let mut placement = vec![usize::MAX; servers];
    for server in 0..servers {
        let mut order: Vec<usize> = (0..hosts).collect();
        let share = |host: usize, placement: &[usize]| {
            let used: u64 = (0..servers).filter(|&s| placement[s] == host).map(|s| input.servers[s].ram_mb).sum();
            used as f64 / input.hosts[host].ram_mb.capacity as f64
        };
        order.sort_by(|&a, &b| share(a, &placement).total_cmp(&share(b, &placement)));
        if let Some(&host) = order.iter().find(|&&host| fits(&input, &placement, server, host)) {
            placement[server] = host;
        }
    }
    // Servers that fit nowhere are left out of the cloud.
    let kept: Vec<usize> = (0..servers).filter(|&s| placement[s] != usize::MAX).collect();
    let kept_ids: BTreeSet<String> = kept.iter().map(|&s| input.servers[s].id.clone()).collect();
    input.servers = kept.iter().map(|&s| input.servers[s].clone()).collect();
    let placement: Vec<usize> = kept.iter().map(|&s| placement[s]).collect();
    for group in &mut input.groups {
        group.members.retain(|id| kept_ids.contains(id));
    }
    apply_placement(&mut input, &placement);
    Cloud { input, solved: placement }
}

/// Moves movable servers of non-victims onto victims while they fit; returns the cloud and
/// how many servers the loaded victims received (the size of the known solution).
fn unbalance(random: &mut Random, cloud: &Cloud, victims: usize, settings: &PlannerSettings) -> (BalanceInput, usize) {
    let mut input = cloud.input.clone();
    let hosts = input.hosts.len();
    let victims: BTreeSet<usize> = (0..victims.min(hosts - 1)).map(|_| random.below(hosts)).collect();
    let mut placement = cloud.solved.clone();
    for server in 0..placement.len() {
        if victims.contains(&placement[server]) || input.servers[server].pinned.is_some() || random.chance(15) {
            continue;
        }
        let victim = *victims.iter().nth(random.below(victims.len())).unwrap();
        if fits(&input, &placement, server, victim) {
            placement[server] = victim;
        }
    }
    apply_placement(&mut input, &placement);
    let loaded: BTreeSet<String> = plan(&input, settings)
        .unwrap()
        .hosts
        .iter()
        .filter(|host| host.loaded_before)
        .map(|host| host.name.clone())
        .collect();
    let known_solution = (0..placement.len())
        .filter(|&s| placement[s] != cloud.solved[s] && loaded.contains(&input.hosts[placement[s]].name))
        .count();
    (input, known_solution)
}

/// Replays the plan step by step and checks every hard rule after each migration.
fn check_every_step(input: &BalanceInput, plan: &Plan, weight: f64) -> Result<(), TestCaseError> {
    let mut host_of: BTreeMap<&str, String> = input.servers.iter().map(|s| (s.id.as_str(), s.host.clone())).collect();
    let mut ram: BTreeMap<&str, u64> = input.hosts.iter().map(|h| (h.name.as_str(), h.ram_mb.used)).collect();
    let mut vcpus: BTreeMap<&str, u64> = input.hosts.iter().map(|h| (h.name.as_str(), h.vcpus.used)).collect();
    let loaded_before: BTreeSet<&str> =
        plan.hosts.iter().filter(|h| h.loaded_before).map(|h| h.name.as_str()).collect();
    let mut moved = BTreeSet::new();
    for migration in &plan.migrations {
        let server = input.servers.iter().find(|s| s.id == migration.server_id).expect("planned server exists");
        prop_assert!(moved.insert(server.id.as_str()), "{} moved twice", server.id);
        prop_assert!(server.pinned.is_none(), "pinned {} moved", server.id);
        prop_assert_eq!(&host_of[server.id.as_str()], &migration.source);
        prop_assert!(loaded_before.contains(migration.source.as_str()), "source {} was not loaded", migration.source);
        prop_assert!(!loaded_before.contains(migration.target.as_str()), "target {} was loaded", migration.target);
        let target = input.hosts.iter().find(|h| h.name == migration.target).expect("target exists");
        *ram.get_mut(migration.source.as_str()).unwrap() -= server.ram_mb;
        *vcpus.get_mut(migration.source.as_str()).unwrap() -= server.vcpus;
        *ram.get_mut(target.name.as_str()).unwrap() += server.ram_mb;
        *vcpus.get_mut(target.name.as_str()).unwrap() += server.vcpus;
        host_of.insert(server.id.as_str(), target.name.clone());
        prop_assert!(ram[target.name.as_str()] <= target.ram_mb.capacity, "RAM capacity of {} exceeded", target.name);
        prop_assert!(vcpus[target.name.as_str()] <= target.vcpus.capacity, "vCPUs of {} exceeded", target.name);
        let ram_share = ram[target.name.as_str()] as f64 / target.ram_mb.capacity as f64;
        let vcpu_share = vcpus[target.name.as_str()] as f64 / target.vcpus.capacity as f64;
        let load = (ram_share + weight * vcpu_share) / (1.0 + weight);
        prop_assert!(load <= plan.threshold + 1e-9, "target {} loaded: {load} > {}", target.name, plan.threshold);
        for group in input.groups.iter().filter(|g| g.members.contains(&server.id)) {
            let together = group.members.iter().filter(|id| host_of[id.as_str()] == target.name).count();
            prop_assert!(
                together as u32 <= group.max_server_per_host,
                "anti-affinity group {} has {together} members on {}",
                group.id,
                target.name
            );
        }
    }
    for host in &plan.hosts {
        prop_assert_eq!(host.ram_used_after, ram[host.name.as_str()]);
        prop_assert_eq!(host.vcpus_used_after, vcpus[host.name.as_str()]);
    }
    Ok(())
}

fn settings(approx_percent: u8, weighted: bool) -> PlannerSettings {
    PlannerSettings { approx: f64::from(approx_percent) / 100.0, vcpu_weight: if weighted { 0.5 } else { 0.0 } }
}

/// The counterexample the property test found at 25,000 cases (ADR 0014): a plan exists, the
/// greedy alone left one host loaded; the bounded exact search finds it.
#[test]
fn the_known_counterexample_is_solved_by_the_bounded_exact_search() {
    let settings = settings(10, true);
    let mut random = Random(317_197_747_074_092_766);
    let cloud = solved_cloud(&mut random, 4, 21);
    assert!(plan(&cloud.input, &settings).unwrap().hosts.iter().all(|host| !host.loaded_before));
    let (input, known_solution) = unbalance(&mut random, &cloud, 2, &settings);
    let plan = plan(&input, &settings).unwrap();
    check_every_step(&input, &plan, settings.vcpu_weight).unwrap();
    assert!(plan.is_balanced(), "still loaded: {:?}", plan.still_loaded().collect::<Vec<_>>());
    assert!(plan.migrations.len() <= known_solution, "{} > {known_solution}", plan.migrations.len());
}

proptest! {
    // A fixed seed: the CI run is reproducible. A known counterexample exists in the wider space
    // (ADR 0014: found at 25,000 cases); to explore, change the seed and raise the cases here.
    #![proptest_config(ProptestConfig {
        cases: 600,
        max_global_rejects: 20_000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0a05_ba1a_2026_1123),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_cloud_with_a_solution_always_ends_inside_the_band(
        seed in any::<u64>(),
        hosts in 2usize..9,
        servers in 2usize..48,
        victims in 1usize..4,
        approx in 2u8..30,
        weighted in any::<bool>(),
    ) {
        let settings = settings(approx, weighted);
        let mut random = Random(seed);
        let cloud = solved_cloud(&mut random, hosts, servers);
        let solved_plan = plan(&cloud.input, &settings).unwrap();
        // Only clouds whose solved state is inside the band have a known solution.
        prop_assume!(solved_plan.hosts.iter().all(|host| !host.loaded_before));
        let (input, known_solution) = unbalance(&mut random, &cloud, victims, &settings);
        let plan = plan(&input, &settings).unwrap();
        check_every_step(&input, &plan, settings.vcpu_weight)?;
        prop_assert!(
            plan.is_balanced(),
            "still loaded: {:?}\nplan: {:?}\ninput: {:?}",
            plan.still_loaded().collect::<Vec<_>>(), plan.migrations, input
        );
        prop_assert!(
            plan.migrations.len() <= known_solution,
            "{} migrations where {known_solution} suffice", plan.migrations.len()
        );
    }

    #[test]
    fn any_plan_keeps_capacity_anti_affinity_and_the_band_on_its_targets(
        seed in any::<u64>(),
        hosts in 2usize..9,
        servers in 2usize..48,
        victims in 1usize..5,
        approx in 0u8..30,
        weighted in any::<bool>(),
    ) {
        // No solution is guaranteed here (the solved state may itself be loaded).
        let settings = settings(approx, weighted);
        let mut random = Random(seed);
        let cloud = solved_cloud(&mut random, hosts, servers);
        let (input, _) = unbalance(&mut random, &cloud, victims, &settings);
        let plan = plan(&input, &settings).unwrap();
        check_every_step(&input, &plan, settings.vcpu_weight)?;
        for host in plan.hosts.iter().filter(|host| !host.loaded_before) {
            prop_assert!(!host.loaded_after, "{} became loaded", host.name);
        }
    }
}
