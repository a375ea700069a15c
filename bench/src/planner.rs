//! `planner`: how long the balancing planner takes on one large aggregate.
//!
//! Set-up (deterministic for a `--seed`): `--hosts` hypervisors of 256 GiB (512 MiB reserved)
//! and 64 cores at a CPU allocation ratio of 4, as Placement would report them; `--instances`
//! servers of a flavor mix from 512 MiB / 1 vCPU to 32 GiB / 8 vCPUs, placed unevenly (one host
//! in `--hot-every` attracts four times the share of the others, as after a maintenance
//! window or a rack added empty), 5 % of them pinned (not ACTIVE, deny list) and 10 % in
//! anti-affinity groups of three. Then the planner ([`aos_balance::plan`], pure, in memory)
//! runs `--runs` times on that input.
//!
//! Printed: the cloud (loaded hosts, aggregate load, threshold), each run's time, and what the
//! plan does (migrations, MB moved, hosts still loaded). Headline: the median planning time.

use std::time::{Duration, Instant};

use aos_balance::{BalanceInput, Capacity, GroupPolicy, Host, PlannerSettings, Server, ServerGroup};

#[derive(clap::Args)]
pub struct PlannerArgs {
    /// Hypervisors in the aggregate.
    #[arg(long, default_value_t = 1_000)]
    hosts: usize,
    /// Servers on them.
    #[arg(long, default_value_t = 20_000)]
    instances: usize,
    /// One host in this many gets four times the servers of the others.
    #[arg(long = "hot-every", default_value_t = 10)]
    hot_every: usize,
    /// `[balancing] approx`.
    #[arg(long, default_value_t = 0.1)]
    approx: f64,
    /// `[balancing] vcpu_weight`.
    #[arg(long = "vcpu-weight", default_value_t = 0.0)]
    vcpu_weight: f64,
    /// Planner runs measured (the input is built once).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Flavors: (RAM MiB, vCPUs), the common ones weighted by repetition.
const FLAVORS: [(u64, u64); 10] =
    [(512, 1), (1024, 1), (2048, 1), (2048, 2), (4096, 2), (4096, 2), (8192, 4), (8192, 4), (16384, 4), (32768, 8)];
const HOST_RAM_MB: u64 = 262_144;
const HOST_RESERVED_MB: u64 = 512;
const HOST_CORES: u64 = 64;
const CPU_ALLOCATION_RATIO: u64 = 4;

/// splitmix64: reproducible without a dependency.
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
}

fn cloud(args: &PlannerArgs) -> BalanceInput {
    let mut random = Random(args.seed);
    let mut hosts: Vec<Host> = (0..args.hosts)
        .map(|index| Host {
            name: format!("compute-{index:05}"),
            ram_mb: Capacity { capacity: HOST_RAM_MB - HOST_RESERVED_MB, used: 0 },
            vcpus: Capacity { capacity: HOST_CORES * CPU_ALLOCATION_RATIO, used: 0 },
        })
        .collect();
    // Host choice by weight: hot hosts count four times.
    let weights: Vec<usize> = (0..args.hosts).map(|index| if index % args.hot_every == 0 { 4 } else { 1 }).collect();
    let total_weight: usize = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(args.hosts);
    let mut sum = 0;
    for weight in &weights {
        sum += weight;
        cumulative.push(sum);
    }
    let mut servers = Vec::with_capacity(args.instances);
    let mut groups: Vec<ServerGroup> = Vec::new();
    // Hosts of the members of the group being filled (anti-affinity: one member per host).
    let mut group_hosts: Vec<usize> = Vec::new();
    for index in 0..args.instances {
        let (ram_mb, vcpus) = FLAVORS[random.below(FLAVORS.len())];
        let id = format!("server-{index:07}");
        let in_group = random.below(10) == 0;
        let mut placed = None;
        for _attempt in 0..20 {
            let pick = random.below(total_weight);
            let host = cumulative.partition_point(|&c| c <= pick);
            let fits = hosts[host].ram_mb.used + ram_mb <= hosts[host].ram_mb.capacity
                && hosts[host].vcpus.used + vcpus <= hosts[host].vcpus.capacity;
            if fits && !(in_group && group_hosts.contains(&host)) {
                placed = Some(host);
                break;
            }
        }
        let Some(host) = placed else { continue };
        hosts[host].ram_mb.used += ram_mb;
        hosts[host].vcpus.used += vcpus;
        if in_group {
            match groups.last_mut() {
                Some(group) if group.members.len() < 3 => group.members.push(id.clone()),
                _ => {
                    group_hosts.clear();
                    groups.push(ServerGroup {
                        id: format!("group-{}", groups.len()),
                        name: format!("group-{}", groups.len()),
                        policy: GroupPolicy::AntiAffinity,
                        members: vec![id.clone()],
                        max_server_per_host: 1,
                    })
                }
            }
            group_hosts.push(host);
        }
        servers.push(Server {
            id: id.clone(),
            name: id,
            host: hosts[host].name.clone(),
            ram_mb,
            vcpus,
            pinned: (random.below(20) == 0).then(|| "not ACTIVE".to_owned()),
        });
    }
    BalanceInput { aggregate: "bench".into(), hosts, servers, groups }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn run(args: PlannerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.hosts >= 2, "--hosts must be at least 2");
    anyhow::ensure!(args.hot_every >= 1, "--hot-every must be at least 1");
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let settings = PlannerSettings { approx: args.approx, vcpu_weight: args.vcpu_weight };
    let built = Instant::now();
    let input = cloud(&args);
    let build_time = built.elapsed();
    println!(
        "cloud: {} hosts, {} instances placed ({} asked), {} anti-affinity groups; built in {:.0} ms",
        input.hosts.len(),
        input.servers.len(),
        args.instances,
        input.groups.len(),
        ms(build_time)
    );
    let mut times = Vec::with_capacity(args.runs);
    let mut last = None;
    for run in 1..=args.runs {
        let started = Instant::now();
        let plan = aos_balance::plan(&input, &settings)?;
        let elapsed = started.elapsed();
        println!("run {run}: planned in {:.1} ms", ms(elapsed));
        times.push(elapsed);
        last = Some(plan);
    }
    let plan = last.expect("at least one run");
    let loaded_before = plan.hosts.iter().filter(|host| host.loaded_before).count();
    println!(
        "aggregate load {:.3} (RAM {:.3}, vCPU {:.3}), threshold {:.3}; loaded hosts before {loaded_before}, after {}",
        plan.aggregate_load,
        plan.ram_load,
        plan.vcpu_load,
        plan.threshold,
        plan.still_loaded().count()
    );
    let max_after = plan.hosts.iter().map(|host| host.load_after).fold(0.0, f64::max);
    let max_before = plan.hosts.iter().map(|host| host.load_before).fold(0.0, f64::max);
    println!(
        "plan: {} live migrations, {} MiB moved; highest host load {:.3} before, {:.3} after",
        plan.migrations.len(),
        plan.moved_ram_mb(),
        max_before,
        max_after
    );
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "planner: {} hosts {} instances planning time median {:.1} ms (max {:.1} ms)",
        input.hosts.len(),
        input.servers.len(),
        ms(median),
        ms(times[times.len() - 1])
    );
    Ok(())
}
