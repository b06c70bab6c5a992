//! One shard of the simulated world: the POPs and regions it owns, its event queue, RNG
//! and recorder, and the messages it has for other shards.

use super::edge::EdgeNode;
use super::lease::{self, LeaseCounters, PopLeases};
use super::node::{Artifact, IdHasher, Node, Removed};
use super::queue::{EventQueue, Nanos};
use super::seams::{PolicyChoice, RegionChoice, RegionView};
use super::stats::{Recorder, Tier};
use super::{CanaryOutcome, Event, NO_FUNCTION, Outcome, Progress, SEC, World, ns};
use crate::scenario::model::OVERHEAD_LEVELS;
use rand_chacha::ChaCha8Rng;
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};
use strata_core::model::FunctionConfig;
use strata_core::policy::canary::{Canary, CanaryConfig, Verdict};
use strata_core::policy::concurrency::{Budget, LimitConfig};
use strata_core::policy::edge::EdgePlanner;
use strata_core::policy::origin::OriginPlanner;
use strata_core::policy::{PlacementPolicy, WarmMode, WarmPolicy};

/// The real placement policy, keyed by function index rather than by
/// [`FunctionKey`](strata_core::model::FunctionKey):
/// hashing two strings per call was a tenth of a fleet-scale run's time.
type PopPlacement = PlacementPolicy<u32, BuildHasherDefault<IdHasher>>;

/// The POP's real planner over [`PopPlacement`].
type PopPlanner = EdgePlanner<u32, BuildHasherDefault<IdHasher>>;

/// The real warm-pool policy, keyed like [`PopPlacement`].
type PopWarm = WarmPolicy<u32, BuildHasherDefault<IdHasher>>;

/// Ticks an instance beyond its target sits idle before it is retired (the node's
/// `common::warm_loop`: a forecast that dips for a tick must not throw away instances the
/// next tick needs again).
const RETIRE_AFTER_TICKS: u64 = 10;

/// What a POP knows of one function.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Known {
    /// The POP has the function's metadata (learned from a forwarded response).
    pub meta: bool,
    /// The function's code at this POP.
    pub artifact: Artifact,
}

/// A simulated POP.
#[derive(Debug)]
pub(super) struct Pop {
    pub node: EdgeNode,
    /// The node's planner (placement, pins, budget): `strata_core::policy::edge`.
    pub planner: PopPlanner,
    /// The warm-pool policy, in `trend` mode (`None`: keep-alive only).
    pub warm: Option<PopWarm>,
    /// What the POP knows of each function, indexed by function: two bytes each, so even
    /// 500 POPs by 10 000 functions stay a few megabytes.
    pub known: Vec<Known>,
    /// Functions whose artifact is ready here, ascending (at most `max_artifacts`).
    pub ready: Vec<u32>,
    /// The POP's view of every region, indexed by region.
    pub views: Vec<RegionView>,
    /// Artifacts prepared or being prepared.
    pub artifacts: usize,
    /// The tenants' leases here.
    pub leases: PopLeases,
    /// Arrivals per function since the last load report.
    pub window: super::trend::Window,
}

/// A simulated region.
#[derive(Debug)]
pub(super) struct Region {
    pub node: Node,
    pub up: bool,
    pub epoch: u32,
    /// Each tenant's concurrency books (the nodes' `policy::concurrency::Budget`, with
    /// its adaptive limit), indexed by tenant; empty without a `tenant_concurrency`.
    pub budgets: Vec<Budget>,
    /// The trending hints' watch.
    pub watch: super::trend::Watch,
    /// Whether each function's module was compiled here since the region started
    /// (indexed by function): its first run compiles it (`cold_start.region_compile_ms`).
    pub compiled: Vec<bool>,
}

/// A shard: see the module docs of [`super`].
pub(super) struct Shard<'w> {
    pub w: &'w World<'w>,
    pub id: u32,
    pub rng: ChaCha8Rng,
    pub base: Instant,
    /// Each function's config as the planner reads it (memory and placement; indexed by
    /// function).
    pub configs: Vec<FunctionConfig>,
    pub queue: EventQueue<Event>,
    /// The POPs this shard owns, in the order of their index (`World::pop_home`).
    pub pops: Vec<Pop>,
    /// The regions this shard owns, in the order of their index (`World::region_home`).
    pub regions: Vec<Region>,
    pub chooser: Box<dyn RegionChoice + Send>,
    /// The regions' planner (`policy::origin`; regions here have one fleet, so it keeps
    /// no state of its own and one serves every region of the shard).
    pub origin: OriginPlanner<u32, BuildHasherDefault<IdHasher>>,
    /// The runtime canary's counts and verdicts, the nodes' own policy (canary runs have
    /// one shard).
    pub rollout: Option<Canary<u32>>,
    pub canary: CanaryOutcome,
    pub rec: Recorder,
    pub lease_counts: LeaseCounters,
    pub removed: Vec<Removed>,
    /// Messages for other shards, by destination, sent at the end of the window.
    pub outbox: Vec<Vec<(Nanos, Event)>>,
    /// Scratch for a warm-pool tick's targets.
    targets: Vec<(u32, u32)>,
    next_sample: Nanos,
    events: u64,
}

impl std::fmt::Debug for Shard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("pops", &self.pops.len())
            .field("regions", &self.regions.len())
            .field("pending", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl<'w> Shard<'w> {
    /// Shard `id` of `w`, with its POPs and regions idle and its first events scheduled.
    pub fn new(w: &'w World<'w>, id: u32, rng: ChaCha8Rng) -> anyhow::Result<Self> {
        let s = w.s;
        let n = w.functions.len();
        let keep_pop = ns(s.pop.keep_alive_s * 1e3);
        let keep_region = ns(s.region.keep_alive_s * 1e3);
        let base = Instant::now();
        let pops = (0..s.topology.pops)
            .filter(|&p| w.shard_of_pop(p as u32) == id)
            .map(|p| Pop {
                node: EdgeNode::new(s.pop.slots, s.pop.memory_mb, keep_pop),
                // The popular set's memory budget is the POP's memory (`pop.memory_mb`).
                planner: PopPlanner::new(
                    PopPlacement::with_hasher(
                        strata_core::policy::PlacementConfig {
                            memory_budget_mb: s.pop.memory_mb,
                            ..s.pop.placement.clone()
                        },
                        Default::default(),
                    ),
                    base,
                    // No simulated function has a rate limit.
                    1,
                ),
                warm: (s.pop.warm.mode == WarmMode::Trend)
                    .then(|| PopWarm::with_hasher(s.pop.warm.clone(), Default::default())),
                known: vec![Known::default(); n],
                ready: Vec::new(),
                views: (0..w.regions)
                    .map(|r| RegionView {
                        region: r as u32,
                        rtt: w.rtt(p as u32, r as u32),
                        avoid_until: 0,
                    })
                    .collect(),
                artifacts: 0,
                leases: PopLeases::default(),
                window: Default::default(),
            })
            .collect();
        let tenants = w.functions.iter().map(|f| f.tenant).max().unwrap_or(0) as usize + 1;
        let regions = (0..w.regions)
            .filter(|&r| w.shard_of_region(r as u32) == id)
            .map(|_| Region {
                node: Node::new(s.region.slots, s.region.memory_mb, keep_region),
                up: true,
                epoch: 0,
                budgets: budgets(s, tenants, base),
                watch: super::trend::Watch::new(&s.region.trending, n),
                compiled: vec![false; n],
            })
            .collect();
        let rollout = s.canary.as_ref().map(|c| {
            Canary::new(CanaryConfig {
                // The share as the nodes take it: whole percent.
                percent: (c.share * 100.0).round().clamp(0.0, 100.0) as u8,
                min_samples: c.min_samples,
                max_tracked: n.max(1),
                ..CanaryConfig::default()
            })
        });
        let rec = Recorder::new(w.end, (s.sample_interval() * SEC) as Nanos)?;
        let mut shard = Self {
            w,
            id,
            rng,
            base,
            configs: w
                .functions
                .iter()
                .map(|f| FunctionConfig {
                    memory_mb: u32::try_from(f.memory_mb).unwrap_or(u32::MAX),
                    placement: f.placement,
                    ..FunctionConfig::default()
                })
                .collect(),
            queue: EventQueue::default(),
            pops,
            regions,
            chooser: Box::new(PolicyChoice::default()),
            origin: OriginPlanner::new(None),
            rollout,
            canary: CanaryOutcome::default(),
            next_sample: rec.interval,
            rec,
            lease_counts: LeaseCounters::default(),
            removed: Vec::new(),
            outbox: vec![Vec::new(); w.shards as usize],
            targets: Vec::new(),
            events: 0,
        };
        shard.schedule_start();
        Ok(shard)
    }

    /// The index of POP `pop` in this shard's `pops`.
    pub fn local_pop(&self, pop: u32) -> usize {
        self.w.pop_home[pop as usize].index as usize
    }

    /// The index of region `region` in this shard's `regions`.
    pub fn local_region(&self, region: u32) -> usize {
        self.w.region_home[region as usize].index as usize
    }

    /// The virtual time `now` as the policies' clock.
    pub fn at(&self, now: Nanos) -> Instant {
        self.base + Duration::from_nanos(now)
    }

    /// Schedules `event` at `at` in shard `to`: here, or in its outbox.
    pub fn send(&mut self, to: u32, at: Nanos, event: Event) {
        if to == self.id {
            self.queue.push(at, event);
        } else {
            self.outbox[to as usize].push((at, event));
        }
    }

    /// The POPs this shard owns, ascending.
    pub(super) fn own_pops(&self) -> Vec<u32> {
        let w = self.w;
        (0..w.s.topology.pops as u32)
            .filter(|&p| w.shard_of_pop(p) == self.id)
            .collect()
    }

    /// Handles every event before `limit`, in time order.
    pub fn run_until(&mut self, limit: Nanos, progress: Progress<'_>) {
        while let Some((now, event)) = self.queue.pop_before(limit) {
            let end = self.w.end;
            while self.next_sample <= now.min(end) {
                self.sample(self.next_sample);
                self.next_sample += self.rec.interval;
            }
            self.events += 1;
            if self.events.is_multiple_of(65_536) {
                progress(Duration::from_nanos(now.min(end)));
            }
            self.handle(now, event);
        }
    }

    fn handle(&mut self, now: Nanos, event: Event) {
        match event {
            Event::Arrival { pop, viral } => {
                let func = if viral == NO_FUNCTION {
                    self.w.zipf.sample(&mut self.rng) as u32
                } else {
                    viral
                };
                let exec = self.exec_time(func);
                self.invoke(now, pop, func, exec);
                self.schedule_arrival(pop, now);
            }
            Event::TraceArrival { index } => {
                let Some(t) = self.w.trace else { return };
                let inv = t.invocations[index as usize];
                let pop = t.functions[inv.function as usize].app % self.w.s.topology.pops as u32;
                let exec = (inv.duration * SEC) as Nanos;
                self.invoke(now, pop, inv.function, exec);
                if let Some(next) = self.next_trace_index(index as usize + 1) {
                    self.schedule_trace(next, now);
                }
            }
            Event::PlannedArrival { index } => self.planned_arrival(now, index),
            Event::Forwarded {
                region,
                pop,
                func,
                exec,
                learn,
            } => self.reach_region(now, region, pop, func, exec, learn),
            Event::Complete(c) => self.complete(now, c),
            Event::Learned { pop, func } => {
                let i = self.local_pop(pop);
                self.pops[i].known[func as usize].meta = true;
            }
            Event::WarmTick { pop } => self.warm_tick(now, pop),
            Event::Prepared { pop, func } => {
                let i = self.local_pop(pop);
                let p = &mut self.pops[i];
                let known = &mut p.known[func as usize];
                if known.artifact == Artifact::Preparing {
                    known.artifact = Artifact::Ready;
                    if let Err(i) = p.ready.binary_search(&func) {
                        p.ready.insert(i, func);
                    }
                }
            }
            Event::RegionDown { region } => {
                let at = self.at(now);
                let i = self.local_region(region);
                let r = &mut self.regions[i];
                r.up = false;
                r.epoch += 1;
                r.budgets = budgets(self.w.s, r.budgets.len(), at);
                let before = r.node.used_mb;
                r.node.wipe();
                self.rec.memory_change(Tier::Region, now, before, 0, &[]);
            }
            Event::RegionUp { region } => {
                let i = self.local_region(region);
                self.regions[i].up = true;
            }
            Event::LeaseTick { pop } => self.lease_tick(now, pop),
            Event::ReportTick { pop } => self.report_tick(now, pop),
            Event::Reported {
                region,
                func,
                count,
            } => self.reported(now, region, func, count),
            Event::TrendTick { region } => self.trend_tick(now, region),
            Event::Hint { pop, region, func } => self.hint(now, pop, region, func),
            Event::LeaseAt {
                region,
                pop,
                tenant,
                slots,
                back,
            } => self.lease_at(now, region, pop, tenant, slots, back),
            Event::LeaseAnswer {
                pop,
                region,
                tenant,
                held,
                granted,
            } => {
                let answer = lease::Answer {
                    region,
                    tenant,
                    held,
                    granted,
                };
                self.lease_answer(now, pop, answer);
            }
            Event::LeaseFailed { pop, tenant } => self.lease_failed(now, pop, tenant),
        }
    }

    /// Closes `pop`'s warm-pool ticks and resizes its pools to the policy's targets, like
    /// the node's `common::warm_loop`: pre-warm up to the target (within free memory),
    /// retire instances beyond it once idle for `RETIRE_AFTER_TICKS` ticks.
    fn warm_tick(&mut self, now: Nanos, pop: u32) {
        let w = self.w;
        let tick = w.s.pop.warm.tick().as_nanos() as Nanos;
        if now + tick < w.end {
            self.queue.push(now + tick, Event::WarmTick { pop });
        }
        let at = self.at(now);
        let i = self.local_pop(pop);
        let p = &mut self.pops[i];
        let Some(policy) = p.warm.as_mut() else {
            return;
        };
        if !policy.tick(at) {
            return;
        }
        self.targets.clear();
        self.targets
            .extend(policy.targets().map(|(&func, target)| (func, target)));
        // Deterministic order: the policy's table iterates in hash order.
        self.targets.sort_unstable();
        self.removed.clear();
        let before = p.node.used_mb;
        // Expired instances are gone before anything is counted.
        p.node.sweep(now, &mut self.removed);
        let idle_since = now.saturating_sub(tick * RETIRE_AFTER_TICKS);
        for &(func, target) in &self.targets {
            let memory_mb = w.functions[func as usize].memory_mb;
            let target = target as usize;
            p.node
                .retire(now, func, target, idle_since, &mut self.removed);
            if p.known[func as usize].artifact == Artifact::Ready {
                p.node.prewarm(now, func, memory_mb, target);
            }
        }
        let after = p.node.used_mb;
        self.rec
            .memory_change(Tier::Pop, now, before, after, &self.removed);
    }

    fn exec_time(&mut self, func: u32) -> Nanos {
        let median = self.w.functions[func as usize].median_ms;
        let exec = ns(super::arrival::lognormal(
            &mut self.rng,
            median,
            self.w.s.functions.exec_sigma,
        ));
        self.with_overshoot(exec)
    }

    /// `exec` plus a waiting guest's overshoot, when the model has one.
    pub(super) fn with_overshoot(&mut self, exec: Nanos) -> Nanos {
        match &self.w.c.exec_overshoot_quantiles {
            Some(q) => {
                let u = rand::Rng::random::<f64>(&mut self.rng);
                exec + super::dispatch::inverse_cdf(&OVERHEAD_LEVELS, q, u)
            }
            None => exec,
        }
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

    /// Closes the run: the remaining samples, memory-seconds and the canary's verdicts.
    pub fn finish(mut self) -> anyhow::Result<Outcome> {
        let end = self.w.end;
        while self.next_sample <= end {
            self.sample(self.next_sample);
            self.next_sample += self.rec.interval;
        }
        let memory_mb_seconds = [
            self.rec.memory_mb_seconds(Tier::Pop, end),
            self.rec.memory_mb_seconds(Tier::Region, end),
        ];
        let canary = self.rollout.as_ref().map(|rollout| {
            let mut c = self.canary.clone();
            for (i, f) in self.w.functions.iter().enumerate() {
                match rollout.verdict(&(i as u32)) {
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
        Ok(Outcome {
            memory_mb_seconds,
            canary,
            events: self.events,
            functions: self.w.functions.len(),
            shards: self.w.shards,
            leases: self.lease_counts,
            recorder: self.rec,
        })
    }
}

/// Fresh concurrency books for `tenants` tenants at `now`, limited as the scenario's region
/// says (`tenant_concurrency` and its adaptive knobs); none without a limit.
fn budgets(s: &crate::scenario::Scenario, tenants: usize, now: Instant) -> Vec<Budget> {
    let Some(hard_max) = s.region.tenant_concurrency else {
        return Vec::new();
    };
    let config = LimitConfig {
        hard_max,
        burst: s.region.tenant_burst.unwrap_or(hard_max),
        step: s.region.tenant_step,
        interval: Duration::from_millis(s.region.tenant_interval_ms),
    };
    // A lease not renewed is reclaimed after its TTL and grace, like the region's.
    let lease_life = super::lease::Terms::new(&s.leases).reclaim;
    vec![Budget::new(config, lease_life, now); tenants]
}
