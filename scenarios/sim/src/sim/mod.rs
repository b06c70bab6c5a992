//! The discrete-event simulator: POPs and regions driven by the real
//! `strata_core::policy::PlacementPolicy` on a virtual clock.
//!
//! A run is a pure function of its [`Scenario`] (and trace). The model (DESIGN §6): each
//! POP decides per invocation, with the placement policy, to run locally (warm or cold,
//! within its slots and memory budget) or to forward to the nearest region it believes
//! alive, for a reason; popular functions get their artifact prepared (fetch over the
//! POP's RTT + transfer + deserialize); a forward reaches its region half an RTT later,
//! where it runs within the region's slots and tenant limits (429 beyond); the response
//! teaches the POP the function's metadata; a failed region costs the POPs that still try
//! it a detection timeout before they fail over. docs/scenarios.md lists what is modelled
//! and what is not.
//!
//! The world is split into `shards` (`shard::Shard`), POPs and regions dealt by expected
//! work (`deal`), each shard with its own event queue and seeded RNG.
//! Shards only talk through messages that take at least the smallest one-way POP↔region
//! latency to arrive (a forward, a response), so with more than one shard they run on
//! their own threads in lock-step windows of that length (`lockstep`), exchanging the
//! window's messages at each step: the conservative scheme of parallel discrete-event
//! simulation. Each shard is deterministic and so is the exchange, so the same file gives
//! the same report; another shard count draws other random numbers and gives a
//! statistically equivalent one.

pub mod arrival;
mod dispatch;
pub mod edge;
pub mod lease;
mod lockstep;
pub mod node;
mod population;
pub mod queue;
mod schedule;
pub mod seams;
mod shard;
pub mod stats;
pub mod trace;
mod trend;

#[cfg(test)]
mod tests;

use crate::scenario::model::OVERHEAD_LEVELS;
use crate::scenario::{Arrivals, Scenario};
use arrival::{RateProfile, Zipf};
use queue::Nanos;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shard::Shard;
use stats::{Recorder, Tier};
use std::time::Duration;
use strata_core::model::Placement;
use strata_core::policy::liveness::{LivenessConfig, Reconnect};
use trace::Trace;

/// Nanoseconds in a millisecond.
const MS: f64 = 1e6;
/// Nanoseconds in a second.
const SEC: f64 = 1e9;
/// The standard normal distribution's 99th percentile: a lognormal's p99 is its median times
/// `exp(sigma * Z_99)`.
const Z_99: f64 = 2.326_347_874;

pub use schedule::Planned;

/// One function of the population (24 bytes: every invocation reads one, so a population
/// of thousands should stay in cache).
#[derive(Debug, Clone)]
pub struct FnSpec {
    /// Index of its tenant.
    pub tenant: u32,
    /// Median execution time, ms.
    pub median_ms: f64,
    /// Memory per instance, MB.
    pub memory_mb: u64,
    /// Its `placement` setting.
    pub placement: Placement,
    /// Whether it gets worse on the next runtime (canary scenarios).
    pub regressed: bool,
}

/// A scheduled event. Every event belongs to one POP or region, and is handled by the
/// shard that owns it.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The next synthetic arrival at a POP; `viral` is the function a flash crowd sends
    /// it to, or `NO_FUNCTION` to draw one by popularity.
    Arrival { pop: u32, viral: u32 },
    /// The next trace invocation (index into the trace) this shard replays.
    TraceArrival { index: u32 },
    /// The next invocation of the given schedule (index into it) this shard replays.
    PlannedArrival { index: u32 },
    /// A forwarded invocation reaches its region; `learn` says the POP does not know the
    /// function's metadata yet.
    Forwarded {
        region: u32,
        pop: u32,
        func: u32,
        exec: Nanos,
        learn: bool,
    },
    /// An execution ends.
    Complete(Completion),
    /// A region's response reached the POP, which now knows the function's metadata.
    Learned { pop: u32, func: u32 },
    /// A POP's warm-pool policy closes a tick: pre-warm and retire to its targets.
    WarmTick { pop: u32 },
    /// A POP finished preparing a function's artifact.
    Prepared { pop: u32, func: u32 },
    /// A region stops answering.
    RegionDown { region: u32 },
    /// A failed region answers again.
    RegionUp { region: u32 },
    /// A POP's lease renewal timer.
    LeaseTick { pop: u32 },
    /// A lease message of `pop` reaches `region`: an acquire of `slots` of `tenant` (0:
    /// renew), or a return of `slots` when `back`.
    LeaseAt {
        region: u32,
        pop: u32,
        tenant: u32,
        slots: u32,
        back: bool,
    },
    /// `region`'s answer to `pop`'s lease message of `tenant`: it counts `held` slots for
    /// the POP, `granted` of them just now.
    LeaseAnswer {
        pop: u32,
        region: u32,
        tenant: u32,
        held: u32,
        granted: u32,
    },
    /// `pop`'s lease message of `tenant` got no answer (its connection timed out).
    LeaseFailed { pop: u32, tenant: u32 },
    /// A POP's load report timer.
    ReportTick { pop: u32 },
    /// A POP's report of `count` arrivals of `func` reaches `region`.
    Reported { region: u32, func: u32, count: u32 },
    /// A region's trend watch ticks.
    TrendTick { region: u32 },
    /// `region`'s hint that `func` trends up reaches `pop`.
    Hint { pop: u32, region: u32, func: u32 },
}

/// The end of one execution.
#[derive(Debug, Clone, Copy)]
struct Completion {
    tier: Tier,
    node: u32,
    func: u32,
    /// The region's epoch at dispatch: a failure in between loses the invocation.
    epoch: u32,
    /// The POP to teach the function's metadata when the response reaches it, or `NO_POP`.
    origin: u32,
    /// End-to-end latency as seen at the POP's edge.
    latency: Nanos,
    /// A POP run that holds a slot of its tenant's lease.
    leased: bool,
}

// Every pending invocation is one event in the queue: keep them small.
const _: () = assert!(std::mem::size_of::<Event>() <= 32);

const NO_POP: u32 = u32::MAX;
const NO_FUNCTION: u32 = u32::MAX;

/// Per-runtime outcome counts of a canary rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CanaryOutcome {
    /// Invocations on the current runtime.
    pub current_invocations: u64,
    /// Errors on the current runtime.
    pub current_errors: u64,
    /// Invocations on the next runtime.
    pub next_invocations: u64,
    /// Errors on the next runtime.
    pub next_errors: u64,
    /// Functions pinned to the current runtime.
    pub pinned: u64,
    /// Functions promoted to the next runtime.
    pub promoted: u64,
    /// Pinned functions that had really regressed.
    pub pinned_regressed: u64,
    /// Regressed functions that were promoted anyway.
    pub promoted_regressed: u64,
    /// Functions still undecided at the end.
    pub undecided: u64,
}

/// What a simulation produced.
#[derive(Debug)]
pub struct Outcome {
    /// Latencies, counters, series.
    pub recorder: Recorder,
    /// Memory-seconds per tier (MB·s).
    pub memory_mb_seconds: [f64; 2],
    /// The canary rollout's outcome, when the scenario has one.
    pub canary: Option<CanaryOutcome>,
    /// Events processed.
    pub events: u64,
    /// Functions in the population.
    pub functions: usize,
    /// Shards (threads) the run was split across.
    pub shards: u32,
    /// What the tenants' leases did.
    pub leases: lease::LeaseCounters,
}

/// Called every few thousand events with the virtual time reached, for progress bars.
pub type Progress<'a> = &'a mut dyn FnMut(Duration);

/// A table of ms at `OVERHEAD_LEVELS` (validated with the scenario) in nanoseconds.
fn levels(q: Option<&[f64]>) -> Option<[Nanos; OVERHEAD_LEVELS.len()]> {
    q.and_then(|q| <[f64; OVERHEAD_LEVELS.len()]>::try_from(q).ok())
        .map(|q| q.map(ns))
}

/// Model constants in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Costs {
    pop_overhead: Nanos,
    /// The spread of the POP's overhead (a lognormal's sigma around `pop_overhead`); 0:
    /// every invocation costs exactly `pop_overhead`.
    pop_overhead_sigma: f64,
    /// The POP's overhead at each of `OVERHEAD_LEVELS`: drawn from by inverse CDF when
    /// measured, in place of the lognormal.
    pop_overhead_quantiles: Option<[Nanos; OVERHEAD_LEVELS.len()]>,
    /// Added to every execution: a waiting guest's overshoot at each of `OVERHEAD_LEVELS`.
    exec_overshoot_quantiles: Option<[Nanos; OVERHEAD_LEVELS.len()]>,
    region_overhead: Nanos,
    /// The region's overhead at each of `OVERHEAD_LEVELS`: drawn from per forward by
    /// inverse CDF when measured, in place of the constant `region_overhead`.
    region_overhead_quantiles: Option<[Nanos; OVERHEAD_LEVELS.len()]>,
    instantiate: Nanos,
    deserialize: Nanos,
    /// A region's first run of a function since it started compiles its module.
    region_compile: Nanos,
    transfer: Nanos,
    failure_detect: Nanos,
}

/// What every shard reads and none changes: the scenario, the population, the RTTs and
/// the failure schedule.
#[derive(Debug)]
struct World<'a> {
    s: &'a Scenario,
    trace: Option<&'a Trace>,
    /// The given requests to replay instead of the scenario's arrival process.
    schedule: Option<&'a [Planned]>,
    functions: Vec<FnSpec>,
    zipf: Zipf,
    profile: RateProfile,
    /// RTT per (POP, region), row-major by POP.
    rtt: Vec<Nanos>,
    regions: usize,
    /// When each region is down: (region, from, until).
    outages: Vec<(u32, Nanos, Nanos)>,
    /// Per outage, row-major by POP: when the POP is connected to the region again
    /// ([`reconnected`]).
    reconnects: Vec<Nanos>,
    c: Costs,
    end: Nanos,
    shards: u32,
    /// Which shard owns each POP and its index there.
    pop_home: Vec<Home>,
    /// Which shard owns each region and its index there.
    region_home: Vec<Home>,
    /// The lease settings.
    leases: lease::Terms,
    /// Each POP's name as the regions' lease books know it.
    holders: Vec<String>,
}

/// Where a POP or region lives: its shard and its index among that shard's own.
#[derive(Debug, Clone, Copy, Default)]
struct Home {
    shard: u32,
    index: u32,
}

/// Deals POPs and regions to `shards` so each shard gets about the same work: regions
/// first, each weighing what its nearest POPs forward to it, then POPs one by one to the
/// lightest shard (longest-processing-time first; ties to the lowest shard, so the deal is
/// a pure function of the RTTs).
fn deal(rtt: &[Nanos], pops: usize, regions: usize, shards: u32) -> (Vec<Home>, Vec<Home>) {
    // Work units: a POP's own invocations weigh 1 each; about half of them are forwarded,
    // to the nearest region, and cost it about as much again.
    const FORWARDED: f64 = 0.5;
    let n = shards.max(1) as usize;
    let mut nearest = vec![0usize; regions];
    for row in rtt.chunks(regions.max(1)).take(pops) {
        if let Some((r, _)) = row.iter().enumerate().min_by_key(|&(r, t)| (*t, r)) {
            nearest[r] += 1;
        }
    }
    let mut load = vec![0.0f64; n];
    let mut lightest = |weight: f64| {
        let s = (0..n)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        load[s] += weight;
        s as u32
    };
    let mut order: Vec<usize> = (0..regions).collect();
    order.sort_by_key(|&r| (std::cmp::Reverse(nearest[r]), r));
    let mut region_shard = vec![0u32; regions];
    for r in order {
        region_shard[r] = lightest(nearest[r] as f64 * FORWARDED);
    }
    let pop_shard: Vec<u32> = (0..pops).map(|_| lightest(1.0)).collect();
    (number(&pop_shard, n), number(&region_shard, n))
}

/// Homes for items owned by `shard_of` each: indices count up per shard in item order.
fn number(shard_of: &[u32], shards: usize) -> Vec<Home> {
    let mut count = vec![0u32; shards];
    shard_of
        .iter()
        .map(|&shard| {
            let index = count[shard as usize];
            count[shard as usize] += 1;
            Home { shard, index }
        })
        .collect()
}

impl World<'_> {
    fn rtt(&self, pop: u32, region: u32) -> Nanos {
        self.rtt[pop as usize * self.regions + region as usize]
    }

    /// Whether `region` answers at `t` (POPs learn that it does not by timing out).
    /// When `region`'s outage covering `t` began, if it is down at `t`.
    fn down_since(&self, region: u32, t: Nanos) -> Option<Nanos> {
        self.outages
            .iter()
            .find(|&&(r, from, until)| r == region && (from..until).contains(&t))
            .map(|&(_, from, _)| from)
    }

    /// Whether `pop` knows `region` is down at `t`: it noticed the silence
    /// (`failure_detect` after the failure) and has not reconnected yet; then until when.
    /// The node marks such a region down in its region choice and sends it nothing, not
    /// even a lease message (`RegionChoice::handle_down`, pop-node's `upstream::supervise`).
    fn known_down(&self, pop: u32, region: u32, t: Nanos) -> Option<Nanos> {
        let pops = self.pop_home.len();
        self.outages
            .iter()
            .enumerate()
            .filter(|(_, o)| o.0 == region)
            .find_map(|(k, &(_, from, until))| {
                let noticed = from + self.c.failure_detect;
                let up = self.reconnects[k * pops + pop as usize];
                // An outage shorter than the silence detector goes unnoticed.
                (until > noticed && (noticed..up).contains(&t)).then_some(up)
            })
    }

    /// The shard that owns POP `pop`.
    fn shard_of_pop(&self, pop: u32) -> u32 {
        self.pop_home[pop as usize].shard
    }

    /// The shard that owns region `region`.
    fn shard_of_region(&self, region: u32) -> u32 {
        self.region_home[region as usize].shard
    }

    /// The smallest delay of any message between shards: half the smallest RTT.
    fn lookahead(&self) -> Nanos {
        self.rtt.iter().map(|r| r / 2).min().unwrap_or(0)
    }
}

/// When a POP that noticed at `noticed` that a region went silent is connected to it again,
/// the region answering again from `until`: the node's reconnect schedule
/// (`policy::liveness::Reconnect`: an attempt at once, then after 50 ms doubling to 400 ms),
/// its first attempt at or after `until`, plus the handshake's round trip `rtt`. Attempts
/// before `until` find nothing to answer them. `Nanos::MAX` for a region that never comes
/// back.
fn reconnected(noticed: Nanos, until: Nanos, rtt: Nanos) -> Nanos {
    if until == Nanos::MAX {
        return Nanos::MAX;
    }
    let config = LivenessConfig::default();
    // Only differences of this instant are used: it stands for virtual time 0.
    let epoch = std::time::Instant::now();
    let virtual_ns = |i: std::time::Instant| i.duration_since(epoch).as_nanos() as Nanos;
    let mut schedule = Reconnect::new(&config, epoch + Duration::from_nanos(noticed));
    loop {
        let due = schedule.poll_timeout();
        let at = virtual_ns(due);
        if at >= until {
            return at.saturating_add(rtt);
        }
        schedule.poll_attempt(due);
    }
}

fn ns(ms: f64) -> Nanos {
    (ms * MS).max(0.0) as Nanos
}

fn secs_to_ns(s: f64) -> Nanos {
    (s * SEC).max(0.0) as Nanos
}

/// Runs `scenario` (with `trace` for trace replay) to the end, on `scenario.shards`
/// threads.
///
/// # Errors
/// When the scenario asks for a trace and none is given, its names cannot be made, or it
/// asks for shards its smallest RTT cannot separate.
pub fn simulate(
    scenario: &Scenario,
    trace: Option<&Trace>,
    progress: Progress<'_>,
) -> anyhow::Result<Outcome> {
    simulate_with(scenario, trace, None, progress)
}

/// Runs `scenario` on `schedule`'s requests instead of its own arrival process (each at
/// its instant, POP and function, running its execution time plus the model's overshoot):
/// the live workload replay's very requests, so that a comparison with the nodes is not
/// also a comparison of two random samples. Requests naming a POP or function the
/// scenario does not have are skipped.
///
/// # Errors
/// As [`simulate`].
pub fn simulate_schedule(
    scenario: &Scenario,
    schedule: &[Planned],
    progress: Progress<'_>,
) -> anyhow::Result<Outcome> {
    simulate_with(scenario, None, Some(schedule), progress)
}

fn simulate_with(
    scenario: &Scenario,
    trace: Option<&Trace>,
    schedule: Option<&[Planned]>,
    progress: Progress<'_>,
) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
    let mut world = World::new(scenario, trace, &mut rng)?;
    world.schedule = schedule;
    let lookahead = world.lookahead();
    anyhow::ensure!(
        world.shards == 1 || lookahead > 0,
        "shards = {} needs a POP-region RTT of at least 2 ns",
        world.shards
    );
    let mut shards = Vec::with_capacity(world.shards as usize);
    for id in 0..world.shards {
        // Shard 0 goes on with the RNG that drew the world; the others get their own
        // streams of the same seed.
        let rng = if id == 0 {
            rng.clone()
        } else {
            let mut r = ChaCha8Rng::seed_from_u64(scenario.seed);
            r.set_stream(u64::from(id));
            r
        };
        shards.push(Shard::new(&world, id, rng)?);
    }
    if let [only] = shards.as_mut_slice() {
        only.run_until(Nanos::MAX, progress);
    } else {
        lockstep::run(&mut shards, lookahead, progress);
    }
    let mut shards = shards.into_iter().map(Shard::finish);
    let mut outcome = shards.next().ok_or_else(|| anyhow::anyhow!("no shard"))??;
    for other in shards {
        let other = other?;
        outcome.recorder.absorb(other.recorder)?;
        outcome.leases.absorb(&other.leases);
        outcome.events += other.events;
        for (m, o) in outcome
            .memory_mb_seconds
            .iter_mut()
            .zip(other.memory_mb_seconds)
        {
            *m += o;
        }
    }
    outcome.recorder.counters.invocations =
        outcome.recorder.series.iter().map(|b| b.arrivals).sum();
    Ok(outcome)
}

/// The synthetic world a run of `s` draws before its first event: the function population
/// and the RTT matrix in ms (POPs x regions), the very values [`simulate`] uses (the same
/// draws from the same seed). The live workload replay deploys this population.
///
/// # Errors
/// When `s` replays a trace (its population comes from the trace).
pub fn population(s: &Scenario) -> anyhow::Result<(Vec<FnSpec>, Vec<Vec<f64>>)> {
    anyhow::ensure!(
        !matches!(s.arrivals, Arrivals::Trace { .. }),
        "a trace's population comes from the trace"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let functions = population::functions(s, None, &mut rng)?;
    let rtt = population::rtt_matrix(s, &mut rng);
    Ok((functions, rtt))
}

impl<'a> World<'a> {
    fn new(
        s: &'a Scenario,
        trace: Option<&'a Trace>,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<Self> {
        let trace = match (&s.arrivals, trace) {
            (Arrivals::Trace { .. }, None) => anyhow::bail!("trace replay needs the trace"),
            (Arrivals::Trace { .. }, Some(t)) => Some(t),
            _ => None,
        };
        let functions = population::functions(s, trace, rng)?;
        let rtt: Vec<Nanos> = population::rtt_matrix(s, rng)
            .iter()
            .flat_map(|row| row.iter().map(|&ms| ns(ms)))
            .collect();
        let shards = s.shards.max(1);
        let (pop_home, region_home) = deal(&rtt, s.topology.pops, s.topology.regions, shards);
        let outages: Vec<(u32, Nanos, Nanos)> = s
            .region_failure
            .iter()
            .map(|f| {
                let until = f.recover_s.map_or(Nanos::MAX, secs_to_ns);
                (f.region as u32, secs_to_ns(f.at_s), until)
            })
            .collect();
        let detect = ns(s.region.failure_detect_ms);
        let reconnects = outages
            .iter()
            .flat_map(|&(r, from, until)| {
                let regions = s.topology.regions;
                let rtt = &rtt;
                (0..s.topology.pops)
                    .map(move |p| reconnected(from + detect, until, rtt[p * regions + r as usize]))
            })
            .collect();
        let cs = &s.cold_start;
        let c = Costs {
            pop_overhead: ns(s.pop.overhead_ms),
            pop_overhead_sigma: s
                .pop
                .overhead_p99_ms
                .filter(|_| s.pop.overhead_ms > 0.0)
                .map_or(0.0, |p99| (p99 / s.pop.overhead_ms).ln() / Z_99),
            pop_overhead_quantiles: levels(s.pop.overhead_quantiles_ms.as_deref()),
            exec_overshoot_quantiles: levels(s.functions.exec_overshoot_quantiles_ms.as_deref()),
            region_overhead: ns(s.region.overhead_ms),
            region_overhead_quantiles: levels(s.region.overhead_quantiles_ms.as_deref()),
            instantiate: ns(cs.instantiate_ms),
            deserialize: ns(cs.deserialize_ms),
            region_compile: ns(cs.region_compile_ms),
            // KB * 8 bits / (Mbit/s) = ms / 1000 * 8 ... in ms: kb * 8 / mbps.
            transfer: ns(cs.artifact_kb * 8.0 / cs.bandwidth_mbps),
            failure_detect: ns(s.region.failure_detect_ms),
        };
        let zipf = Zipf::new(functions.len(), s.functions.zipf_exponent);
        Ok(Self {
            s,
            trace,
            schedule: None,
            functions,
            zipf,
            profile: s.rate_profile(),
            rtt,
            regions: s.topology.regions,
            outages,
            reconnects,
            c,
            end: (s.duration_s * SEC) as Nanos,
            shards,
            pop_home,
            region_home,
            leases: lease::Terms::new(&s.leases),
            holders: (0..s.topology.pops).map(|p| format!("pop-{p}")).collect(),
        })
    }
}
