//! The discrete-event simulator: POPs and regions driven by the real
//! `common::policy::PlacementPolicy` on a virtual clock.
//!
//! A run is a pure function of its [`Scenario`] (and trace): one seeded RNG, one event
//! queue ordered by (time, insertion), and the policies see `base + virtual time` as their
//! `now`. The model (DESIGN §6): each POP decides per invocation, with the placement
//! policy, to run locally (warm or cold, within its slots and memory budget) or to forward
//! to the nearest region it believes alive, for a reason; popular functions get their
//! artifact prepared (fetch over the POP's RTT + transfer + deserialize); regions run what
//! they are sent within their slots and tenant limits (429 beyond); a failed region costs
//! the POPs that still try it a detection timeout before they fail over. docs/scenarios.md
//! lists what is modelled and what is not.

pub mod arrival;
mod dispatch;
pub mod edge;
pub mod node;
mod population;
pub mod queue;
pub mod seams;
pub mod stats;
pub mod trace;

#[cfg(test)]
mod tests;

use crate::scenario::{Arrivals, Scenario};
use arrival::{RateProfile, Zipf, lognormal};
use common::model::Placement;
use common::policy::PlacementPolicy;
use edge::EdgeNode;
use node::{Artifact, IdHasher, Node, Removed};
use queue::{EventQueue, Nanos};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seams::{Outcomes, PolicyChoice, PolicyJudge, RegionChoice, RegionView, Verdict};
use stats::{Recorder, Tier};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};
use trace::Trace;

/// Nanoseconds in a millisecond.
const MS: f64 = 1e6;
/// Nanoseconds in a second.
const SEC: f64 = 1e9;

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

/// A scheduled event.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The next synthetic arrival at a POP; `viral` is the function a flash crowd sends
    /// it to, or `NO_FUNCTION` to draw one by popularity.
    Arrival { pop: u32, viral: u32 },
    /// The next trace invocation (index into the trace).
    TraceArrival { index: u32 },
    /// An execution ends.
    Complete(Completion),
    /// A POP finished preparing a function's artifact.
    Prepared { pop: u32, func: u32 },
    /// A region stops answering.
    RegionDown { region: u32 },
    /// A failed region answers again.
    RegionUp { region: u32 },
}

/// The end of one execution.
#[derive(Debug, Clone, Copy)]
struct Completion {
    tier: Tier,
    node: u32,
    func: u32,
    /// The region's epoch at dispatch: a failure in between loses the invocation.
    epoch: u32,
    /// The POP that forwarded it (learns the function's metadata), or `NO_POP`.
    origin: u32,
    /// End-to-end latency as seen at the POP's edge.
    latency: Nanos,
}

// Every pending invocation is one event in the queue: keep them small.
const _: () = assert!(std::mem::size_of::<Event>() <= 32);

const NO_POP: u32 = u32::MAX;
const NO_FUNCTION: u32 = u32::MAX;

/// The real placement policy, keyed by function index rather than by
/// [`FunctionKey`](common::model::FunctionKey):
/// hashing two strings per call was a tenth of a fleet-scale run's time.
type PopPlacement = PlacementPolicy<u32, BuildHasherDefault<IdHasher>>;

/// What a POP knows of one function.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// The POP has the function's metadata (learned from a forwarded response).
    meta: bool,
    /// The function's code at this POP.
    artifact: Artifact,
}

/// A simulated POP.
#[derive(Debug)]
struct Pop {
    node: EdgeNode,
    placement: PopPlacement,
    /// What the POP knows of each function, indexed by function: two bytes each, so even
    /// 500 POPs by 10 000 functions stay a few megabytes.
    known: Vec<Known>,
    /// Functions whose artifact is ready here, ascending (at most `max_artifacts`).
    ready: Vec<u32>,
    /// The POP's view of every region, indexed by region.
    views: Vec<RegionView>,
    /// Artifacts prepared or being prepared.
    artifacts: usize,
}

/// A simulated region.
#[derive(Debug)]
struct Region {
    node: Node,
    up: bool,
    epoch: u32,
    /// In-flight executions per tenant.
    tenant_busy: Vec<u32>,
}

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
}

/// Called every few thousand events with the virtual time reached, for progress bars.
pub type Progress<'a> = &'a mut dyn FnMut(Duration);

/// The running simulation. See the module docs.
struct Sim<'a> {
    s: &'a Scenario,
    trace: Option<&'a Trace>,
    rng: ChaCha8Rng,
    base: Instant,
    queue: EventQueue<Event>,
    functions: Vec<FnSpec>,
    zipf: Zipf,
    profile: RateProfile,
    pops: Vec<Pop>,
    regions: Vec<Region>,
    chooser: Box<dyn RegionChoice>,
    judge: Option<PolicyJudge>,
    outcomes: Vec<(Outcomes, Verdict)>,
    canary: CanaryOutcome,
    rec: Recorder,
    removed: Vec<Removed>,
    c: Costs,
    end: Nanos,
    events: u64,
}

/// Model constants in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Costs {
    pop_overhead: Nanos,
    region_overhead: Nanos,
    instantiate: Nanos,
    deserialize: Nanos,
    transfer: Nanos,
    failure_detect: Nanos,
    retry_after: Nanos,
}

fn ns(ms: f64) -> Nanos {
    (ms * MS).max(0.0) as Nanos
}

/// Runs `scenario` (with `trace` for trace replay) to the end.
///
/// # Errors
/// When the scenario asks for a trace and none is given, or its names cannot be made.
pub fn simulate(
    scenario: &Scenario,
    trace: Option<&Trace>,
    progress: Progress<'_>,
) -> anyhow::Result<Outcome> {
    let mut sim = Sim::new(scenario, trace)?;
    sim.run(progress);
    Ok(sim.finish())
}

impl<'a> Sim<'a> {
    fn new(s: &'a Scenario, trace: Option<&'a Trace>) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
        let trace = match (&s.arrivals, trace) {
            (Arrivals::Trace { .. }, None) => anyhow::bail!("trace replay needs the trace"),
            (Arrivals::Trace { .. }, Some(t)) => Some(t),
            _ => None,
        };
        let functions = population::functions(s, trace, &mut rng)?;
        let n = functions.len();
        let (base_rate, amplitude, period) = match s.arrivals {
            Arrivals::Poisson { rate_per_pop } => (rate_per_pop, 0.0, 1.0),
            Arrivals::Diurnal {
                rate_per_pop,
                amplitude,
                period_s,
            } => (rate_per_pop, amplitude, period_s),
            Arrivals::Trace { .. } => (0.0, 0.0, 1.0),
        };
        let rtt = population::rtt_matrix(s, &mut rng);
        let keep_pop = ns(s.pop.keep_alive_s * 1e3);
        let keep_region = ns(s.region.keep_alive_s * 1e3);
        let pops = (0..s.topology.pops)
            .map(|p| Pop {
                node: EdgeNode::new(s.pop.slots, s.pop.memory_mb, keep_pop),
                // The popular set's memory budget is the POP's memory (`pop.memory_mb`).
                placement: PopPlacement::with_hasher(
                    common::policy::PlacementConfig {
                        memory_budget_mb: s.pop.memory_mb,
                        ..s.pop.placement.clone()
                    },
                    Default::default(),
                ),
                known: vec![Known::default(); n],
                ready: Vec::new(),
                views: (0..s.topology.regions)
                    .map(|r| RegionView {
                        region: r as u32,
                        rtt: ns(rtt[p][r]),
                        avoid_until: 0,
                    })
                    .collect(),
                artifacts: 0,
            })
            .collect();
        let tenants = functions.iter().map(|f| f.tenant).max().unwrap_or(0) as usize + 1;
        let regions = (0..s.topology.regions)
            .map(|_| Region {
                node: Node::new(s.region.slots, s.region.memory_mb, keep_region),
                up: true,
                epoch: 0,
                tenant_busy: vec![0; tenants],
            })
            .collect();
        let cs = &s.cold_start;
        let c = Costs {
            pop_overhead: ns(s.pop.overhead_ms),
            region_overhead: ns(s.region.overhead_ms),
            instantiate: ns(cs.instantiate_ms),
            deserialize: ns(cs.deserialize_ms),
            // KB * 8 bits / (Mbit/s) = ms / 1000 * 8 ... in ms: kb * 8 / mbps.
            transfer: ns(cs.artifact_kb * 8.0 / cs.bandwidth_mbps),
            failure_detect: ns(s.region.failure_detect_ms),
            retry_after: ns(s.region.retry_after_s * 1e3),
        };
        let end = (s.duration_s * SEC) as Nanos;
        let judge = s.canary.as_ref().map(|c| PolicyJudge {
            cfg: common::policy::canary::CanaryConfig {
                min_samples: c.min_samples,
                ..common::policy::canary::CanaryConfig::default()
            },
        });
        let zipf = Zipf::new(n, s.functions.zipf_exponent);
        Ok(Self {
            s,
            trace,
            rng,
            base: Instant::now(),
            queue: EventQueue::default(),
            functions,
            zipf,
            profile: RateProfile {
                base: base_rate,
                amplitude,
                period,
                flashes: s.flashes(),
            },
            pops,
            regions,
            chooser: Box::new(PolicyChoice::default()),
            judge,
            outcomes: vec![
                (Outcomes::default(), Verdict::Undecided);
                if judge.is_some() { n } else { 0 }
            ],
            canary: CanaryOutcome::default(),
            rec: Recorder::new(end, (s.sample_interval() * SEC) as Nanos)?,
            removed: Vec::new(),
            c,
            end,
            events: 0,
        })
    }

    fn at(&self, now: Nanos) -> Instant {
        self.base + Duration::from_nanos(now)
    }

    fn run(&mut self, progress: Progress<'_>) {
        match self.trace {
            Some(t) if !t.invocations.is_empty() => {
                let first = secs_to_ns(t.invocations[0].arrival);
                self.queue.push(first, Event::TraceArrival { index: 0 });
            }
            Some(_) => {}
            None => {
                for p in 0..self.pops.len() {
                    self.schedule_arrival(p as u32, 0);
                }
            }
        }
        for f in &self.s.region_failure {
            let region = f.region as u32;
            self.queue
                .push(secs_to_ns(f.at_s), Event::RegionDown { region });
            if let Some(up) = f.recover_s {
                self.queue.push(secs_to_ns(up), Event::RegionUp { region });
            }
        }
        let mut next_sample = self.rec.interval;
        let mut events = 0u64;
        while let Some((now, event)) = self.queue.pop() {
            while next_sample <= now.min(self.end) {
                self.sample(next_sample);
                next_sample += self.rec.interval;
            }
            events += 1;
            if events.is_multiple_of(65_536) {
                progress(Duration::from_nanos(now.min(self.end)));
            }
            self.handle(now, event);
        }
        while next_sample <= self.end {
            self.sample(next_sample);
            next_sample += self.rec.interval;
        }
        self.rec.counters.invocations = self.rec.series.iter().map(|b| b.arrivals).sum();
        self.events = events;
    }

    fn handle(&mut self, now: Nanos, event: Event) {
        match event {
            Event::Arrival { pop, viral } => {
                let func = if viral == NO_FUNCTION {
                    self.zipf.sample(&mut self.rng) as u32
                } else {
                    viral
                };
                let exec = self.exec_time(func);
                self.invoke(now, pop, func, exec);
                self.schedule_arrival(pop, now);
            }
            Event::TraceArrival { index } => {
                let Some(t) = self.trace else { return };
                let inv = t.invocations[index as usize];
                let pop = t.functions[inv.function as usize].app % self.pops.len() as u32;
                let exec = (inv.duration * SEC) as Nanos;
                self.invoke(now, pop, inv.function, exec);
                if let Some(next) = t.invocations.get(index as usize + 1) {
                    let at = secs_to_ns(next.arrival);
                    if at < self.end {
                        self.queue
                            .push(at.max(now), Event::TraceArrival { index: index + 1 });
                    }
                }
            }
            Event::Complete(c) => self.complete(now, c),
            Event::Prepared { pop, func } => {
                let p = &mut self.pops[pop as usize];
                let known = &mut p.known[func as usize];
                if known.artifact == Artifact::Preparing {
                    known.artifact = Artifact::Ready;
                    if let Err(i) = p.ready.binary_search(&func) {
                        p.ready.insert(i, func);
                    }
                }
            }
            Event::RegionDown { region } => {
                let r = &mut self.regions[region as usize];
                r.up = false;
                r.epoch += 1;
                r.tenant_busy.iter_mut().for_each(|b| *b = 0);
                let before = r.node.used_mb;
                r.node.wipe();
                self.rec.memory_change(Tier::Region, now, before, 0, &[]);
            }
            Event::RegionUp { region } => self.regions[region as usize].up = true,
        }
    }

    /// Schedules the next synthetic arrival at `pop` after `now`.
    fn schedule_arrival(&mut self, pop: u32, now: Nanos) {
        let after = now as f64 / SEC;
        if let Some(a) = self.profile.next(&mut self.rng, pop as usize, after) {
            let at = secs_to_ns(a.at);
            if at < self.end {
                let viral = a.function.map_or(NO_FUNCTION, |f| f as u32);
                self.queue.push(at, Event::Arrival { pop, viral });
            }
        }
    }

    fn exec_time(&mut self, func: u32) -> Nanos {
        let median = self.functions[func as usize].median_ms;
        ns(lognormal(
            &mut self.rng,
            median,
            self.s.functions.exec_sigma,
        ))
    }

    /// Sweeps expired instances everywhere and closes the bucket ending at `at`.
    fn sample(&mut self, at: Nanos) {
        let mut warm = [0u64; 2];
        for p in &mut self.pops {
            self.removed.clear();
            let before = p.node.used_mb;
            p.node.sweep(at, &mut self.removed);
            self.rec
                .memory_change(Tier::Pop, at, before, p.node.used_mb, &self.removed);
            warm[0] += p.node.instances;
        }
        for r in &mut self.regions {
            self.removed.clear();
            let before = r.node.used_mb;
            r.node.sweep(at, &mut self.removed);
            self.rec
                .memory_change(Tier::Region, at, before, r.node.used_mb, &self.removed);
            warm[1] += r.node.instances;
        }
        let b = self.rec.bucket(at.saturating_sub(1));
        b.warm_pop = warm[0];
        b.warm_region = warm[1];
    }

    fn finish(mut self) -> Outcome {
        let end = self.end;
        let memory_mb_seconds = [
            self.rec.memory_mb_seconds(Tier::Pop, end),
            self.rec.memory_mb_seconds(Tier::Region, end),
        ];
        let canary = self.judge.map(|_| {
            let mut c = self.canary.clone();
            for (f, (_, v)) in self.functions.iter().zip(&self.outcomes) {
                match v {
                    Verdict::Pinned => {
                        c.pinned += 1;
                        c.pinned_regressed += u64::from(f.regressed);
                    }
                    Verdict::Promoted => {
                        c.promoted += 1;
                        c.promoted_regressed += u64::from(f.regressed);
                    }
                    Verdict::Undecided => c.undecided += 1,
                }
            }
            c
        });
        Outcome {
            memory_mb_seconds,
            canary,
            events: self.events,
            functions: self.functions.len(),
            recorder: self.rec,
        }
    }
}

fn secs_to_ns(s: f64) -> Nanos {
    (s * SEC).max(0.0) as Nanos
}
