//! What happens to one invocation in the simulator: the POP's plan (the node's
//! `strata_core::policy::edge` planner), local execution, forwarding with the node's
//! failover policy (`strata_core::policy::failover`), the region's plan (the node's
//! `strata_core::policy::origin` planner: its admission steps in their order, the runtime
//! canary's choice and count), and artifact preparation. Latency is the time from the POP's edge receiving the request
//! to it sending the response (device <-> POP time is not modelled).

use super::node::Artifact;
use super::queue::Nanos;
use super::shard::Shard;
use super::stats::Tier;
use super::{Completion, Event, NO_POP};
use crate::scenario::model::OVERHEAD_LEVELS;
use rand::Rng;
use std::time::Duration;
use strata_core::policy::ForwardReason;
use strata_core::policy::canary::Side;
use strata_core::policy::concurrency::Charge;
use strata_core::policy::edge::{self, Facts, Plan, Slots};
use strata_core::policy::failover::{Failover, Failure, Mark};
use strata_core::policy::origin::{self, Ran, Step};

/// One invocation's overhead at the POP's edge: a draw from its measured distribution
/// (`pop.overhead_quantiles_ms`), else from a lognormal through its median and p99
/// (`pop.overhead_p99_ms`), else the model's constant.
fn pop_overhead(rng: &mut rand_chacha::ChaCha8Rng, c: &super::Costs) -> Nanos {
    if let Some(q) = &c.pop_overhead_quantiles {
        return inverse_cdf(&OVERHEAD_LEVELS, q, rng.random::<f64>());
    }
    if c.pop_overhead_sigma <= 0.0 {
        return c.pop_overhead;
    }
    super::arrival::lognormal(rng, c.pop_overhead as f64, c.pop_overhead_sigma) as Nanos
}

/// One forward's overhead at the region: a draw from its measured distribution
/// (`region.overhead_quantiles_ms`), else the model's constant (no draw, so a model
/// without quantiles gives the same run as before they were measured). The forward
/// reaches the region after the constant (`region.overhead_ms`, the median when
/// calibrated); the draw is what its latency counts.
fn region_overhead(rng: &mut rand_chacha::ChaCha8Rng, c: &super::Costs) -> Nanos {
    match &c.region_overhead_quantiles {
        Some(q) => inverse_cdf(&OVERHEAD_LEVELS, q, rng.random::<f64>()),
        None => c.region_overhead,
    }
}

/// The value at cumulative probability `u` of the distribution whose value at `levels[i]`
/// is `values[i]`: linear between levels, clamped below the first and above the last.
pub(super) fn inverse_cdf(levels: &[f64], values: &[Nanos], u: f64) -> Nanos {
    let upper = levels.partition_point(|&l| l < u);
    match (upper.checked_sub(1), values.get(upper)) {
        (None, _) => values.first().copied().unwrap_or(0),
        (Some(_), None) => values.last().copied().unwrap_or(0),
        (Some(lower), Some(&hi)) => {
            let (l0, l1) = (levels[lower], levels[upper]);
            let lo = values[lower];
            let t = ((u - l0) / (l1 - l0)).clamp(0.0, 1.0);
            lo + ((hi.saturating_sub(lo)) as f64 * t) as Nanos
        }
    }
}

impl Shard<'_> {
    /// One invocation of `func` arriving at `pop` at `now`, running `exec` when it runs.
    pub(super) fn invoke(&mut self, now: Nanos, pop: u32, func: u32, exec: Nanos) {
        self.rec.bucket(now).arrivals += 1;
        let exec = self.canary_exec(now, func, exec);
        let at = self.at(now);
        let i = self.local_pop(pop);
        let p = &mut self.pops[i];
        // The node's load report counts every arrival, local or forwarded.
        *p.window.entry(func).or_default() += 1;
        let known = p.known[func as usize];
        let facts = Facts {
            function: known.meta.then(|| &self.configs[func as usize]),
            release: (),
            // The simulator's node enforces its own memory bound (`Node::acquire`); the
            // planner's budget sees the instances' memory only.
            module_bytes: (known.artifact == Artifact::Ready).then_some(0),
            planned_instances: p.warm.as_ref().map_or(0, |w| w.target(&func)),
        };
        let slot_free = p.node.slot_free();
        let tenant = self.w.functions[func as usize].tenant;
        let terms = &self.w.leases;
        let leases = &mut p.leases;
        // A local run needs a node slot and a slot of the tenant's lease (drawn only with
        // a node slot, like the node's).
        let mut drew = false;
        let planned = p.planner.plan(at, &func, &facts, || {
            drew = slot_free && leases.draw(at, tenant, terms);
            Slots {
                node: slot_free,
                lease: drew,
            }
        });
        if known.artifact == Artifact::Absent && planned.fetch_artifact {
            self.prepare(now, pop, func);
        }
        match planned.plan {
            Plan::RunLocal { .. } => self.run_local(now, pop, func, exec, drew),
            Plan::Forward {
                reason,
                uncounted_fallback,
            } => {
                if drew {
                    self.pops[i].leases.finish(tenant);
                }
                self.lease_counts.forwards += u64::from(uncounted_fallback);
                self.forward(now, pop, func, exec, reason, uncounted_fallback);
            }
            // No simulated function has a rate limit, and callers are always known.
            Plan::Reject(_) => {
                if drew {
                    self.pops[i].leases.finish(tenant);
                }
                self.rec.bucket(now).refused += 1;
            }
        }
        self.send_leases(now, pop);
    }

    /// Runs `func` at `pop`; `leased`: it holds a slot of its tenant's lease (released
    /// when it ends).
    fn run_local(&mut self, now: Nanos, pop: u32, func: u32, exec: Nanos, leased: bool) {
        let w = self.w;
        let memory_mb = w.functions[func as usize].memory_mb;
        let i = self.local_pop(pop);
        let node = &mut self.pops[i].node;
        self.removed.clear();
        let before = node.used_mb;
        let started = node.acquire(now, func, memory_mb, &mut self.removed);
        let after = node.used_mb;
        self.rec
            .memory_change(Tier::Pop, now, before, after, &self.removed);
        let Some(warm) = started else {
            // A slot was free but the instance does not fit in memory: spill.
            if leased {
                self.pops[i]
                    .leases
                    .finish(w.functions[func as usize].tenant);
            }
            return self.forward(now, pop, func, exec, ForwardReason::OverCapacity, false);
        };
        self.rec.bucket(now).local += 1;
        let at = self.at(now);
        if let Some(policy) = self.pops[i].warm.as_mut() {
            // The node records each local invocation with its execution time and memory.
            policy.handle_invocation(at, &func, Duration::from_nanos(exec), memory_mb << 20);
        }
        let mut busy = exec;
        if !warm {
            busy += w.c.instantiate;
            self.rec.cold_start(now, Tier::Pop);
        }
        let latency = pop_overhead(&mut self.rng, &w.c) + busy;
        self.queue.push(
            now + latency,
            Event::Complete(Completion {
                tier: Tier::Pop,
                node: pop,
                func,
                epoch: 0,
                origin: NO_POP,
                latency,
                leased,
            }),
        );
    }

    /// Forwards `func` from `pop`; `fallback`: it was refused here only for want of a
    /// lease slot, so it runs here uncounted when no region is reachable
    /// (`policy::edge::run_uncounted`).
    fn forward(
        &mut self,
        now: Nanos,
        pop: u32,
        func: u32,
        exec: Nanos,
        reason: ForwardReason,
        fallback: bool,
    ) {
        self.rec.forward(now, reason);
        let w = self.w;
        let i = self.local_pop(pop);
        // The node's failover policy: each region at most once, another only while the
        // request certainly was not received.
        let mut failover = Failover::new();
        self.refresh_views(now, pop);
        loop {
            let p = &mut self.pops[i];
            let chosen = self.chooser.choose(now, pop, &p.views);
            let Some(&r) = failover.attempt(chosen) else {
                break;
            };
            if let Some(down) = w.down_since(r, now) {
                let noticed = down + w.c.failure_detect;
                // Before `noticed` the POP sends on a connection whose peer is silently
                // gone: it hangs until the POP's liveness timeout and fails. After, the
                // connection timed out: the region is unreachable.
                let failure = if now < noticed {
                    Failure::Sent
                } else {
                    Failure::Unreachable
                };
                let step = failover.failed(failure);
                if step.mark == Mark::Unreachable {
                    // Not reached while the POP knows the region is down (its view
                    // excludes it): kept for a region that failed again meanwhile.
                    p.views[r as usize].avoid_until = w.known_down(pop, r, now).unwrap_or(now);
                    self.chooser.unreachable(now, pop, r);
                }
                // A `Failed` mark reaches the node's region choice only when the request
                // times out; the simulator models that detection with `failure_detect`.
                if !step.retry {
                    self.rec.counters.lost += 1;
                    return;
                }
                self.rec.counters.failovers += 1;
                continue;
            }
            // The region's median overhead on the way there; a slow forward's excess
            // (`region_overhead`) is added to its latency once it ran, which changes no
            // admission and keeps the event small.
            let arrive = now + p.views[r as usize].rtt / 2 + w.c.region_overhead;
            let event = Event::Forwarded {
                region: r,
                pop,
                func,
                exec,
                learn: !p.known[func as usize].meta,
            };
            return self.send(w.shard_of_region(r), arrive, event);
        }
        let connected = self.pops[i].views.iter().any(|v| v.avoid_until <= now);
        if fallback && edge::run_uncounted(true, connected) {
            self.lease_counts.uncounted_runs += 1;
            return self.run_local(now, pop, func, exec, false);
        }
        self.rec.counters.unavailable += 1;
        self.rec.bucket(now).refused += 1;
    }

    /// Brings `pop`'s views of the regions up to date at `now`: a region the POP knows is
    /// down (it noticed the silence and has not reconnected, `World::known_down`) is
    /// avoided until the POP is connected to it again, as the node's region choice never
    /// picks a region marked down.
    pub(super) fn refresh_views(&mut self, now: Nanos, pop: u32) {
        let w = self.w;
        if w.outages.is_empty() {
            return;
        }
        let i = self.local_pop(pop);
        for v in &mut self.pops[i].views {
            if let Some(up) = w.known_down(pop, v.region, now) {
                v.avoid_until = v.avoid_until.max(up);
            }
        }
    }

    /// A forward from `pop` reaches `region` at `now`: the origin planner's steps, in its
    /// order (`policy::origin::Plan::steps`): the tenant's adaptive limit (the nodes'
    /// `policy::concurrency::Budget`, which also counts the POPs' leases: `super::lease`),
    /// the region's slot and memory, then the run. Regions here have one fleet, no tenant
    /// shares and no rate limits.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reach_region(
        &mut self,
        now: Nanos,
        region: u32,
        pop: u32,
        func: u32,
        exec: Nanos,
        learn: bool,
    ) {
        let w = self.w;
        let spec = &w.functions[func as usize];
        let tenant = spec.tenant as usize;
        let at = self.at(now);
        let i = self.local_region(region);
        if !self.regions[i].up {
            // It was on its way when the region failed.
            self.rec.counters.lost += 1;
            return;
        }
        // The region resolved the function's code (its trend watch may hint it now).
        self.regions[i].watch.resolved(func);
        let facts = origin::Facts {
            config: &self.configs[func as usize],
            request_id: 0,
            affinity: None,
            // The canary's choice was made on arrival (`canary_exec`), for both tiers.
            canary: None,
        };
        let plan = self.origin.plan(at, &func, &facts, |_| None);
        let mut warm = false;
        for step in plan.steps() {
            let r = &mut self.regions[i];
            match step {
                // The tenant's books (`policy::concurrency::Budget`): its adaptive limit.
                Step::Tenant => {
                    if let Some(budget) = r.budgets.get_mut(tenant)
                        && budget.admit(at, "").is_err()
                    {
                        self.rec.counters.throttled_tenant += 1;
                        self.rec.bucket(now).refused += 1;
                        return;
                    }
                }
                // A simulated region refuses at once when full (no wait queue): its slot
                // and memory are drawn in one go.
                Step::Capacity | Step::Share => {}
                Step::Slot => {
                    self.removed.clear();
                    let before = r.node.used_mb;
                    let started = r.node.acquire(now, func, spec.memory_mb, &mut self.removed);
                    let after = r.node.used_mb;
                    self.rec
                        .memory_change(Tier::Region, now, before, after, &self.removed);
                    let Some(started_warm) = started else {
                        // The tenant's slot is handed back (the node drops its permit).
                        if let Some(budget) = r.budgets.get_mut(tenant) {
                            budget.release("", Charge::Shared, Duration::ZERO);
                        }
                        self.rec.counters.throttled_region_capacity += 1;
                        self.rec.bucket(now).refused += 1;
                        return;
                    };
                    warm = started_warm;
                }
                Step::Run => {
                    let mut busy = exec;
                    if !warm {
                        busy += w.c.deserialize + w.c.instantiate;
                        self.rec.cold_start(now, Tier::Region);
                    }
                    // The region's first run of the function since it started compiles
                    // its module (a warm instance means it was compiled already).
                    if let Some(compiled) = r.compiled.get_mut(func as usize)
                        && !std::mem::replace(compiled, true)
                        && !warm
                    {
                        busy += w.c.region_compile;
                        self.rec.counters.region_compiles += 1;
                    }
                    // Edge to edge: the POP's overhead, the way here, the execution, and
                    // the way back.
                    let latency = pop_overhead(&mut self.rng, &w.c)
                        + w.rtt(pop, region)
                        + region_overhead(&mut self.rng, &w.c)
                        + busy;
                    let epoch = r.epoch;
                    self.queue.push(
                        now + busy,
                        Event::Complete(Completion {
                            tier: Tier::Region,
                            node: region,
                            func,
                            epoch,
                            origin: if learn { pop } else { NO_POP },
                            latency,
                            leased: false,
                        }),
                    );
                    return;
                }
            }
        }
    }

    pub(super) fn complete(&mut self, now: Nanos, c: Completion) {
        let w = self.w;
        match c.tier {
            Tier::Pop => {
                let f = &w.functions[c.func as usize];
                let i = self.local_pop(c.node);
                self.pops[i].node.release(now, c.func, f.memory_mb);
                if c.leased {
                    self.pops[i].leases.finish(f.tenant);
                }
            }
            Tier::Region => {
                let tenant = w.functions[c.func as usize].tenant as usize;
                let i = self.local_region(c.node);
                let region = &mut self.regions[i];
                if region.epoch != c.epoch {
                    self.rec.counters.lost += 1;
                    return;
                }
                region.node.release(now, c.func);
                if let Some(budget) = region.budgets.get_mut(tenant) {
                    // No simulated function reserves concurrency: every charge is shared.
                    // The slot was held for about the edge-to-edge latency.
                    let held = Duration::from_nanos(c.latency);
                    budget.release("", Charge::Shared, held);
                }
                if c.origin != NO_POP {
                    let rtt = w.rtt(c.origin, c.node);
                    let learned = Event::Learned {
                        pop: c.origin,
                        func: c.func,
                    };
                    self.send(w.shard_of_pop(c.origin), now + (rtt - rtt / 2), learned);
                }
            }
        }
        self.rec.completed(c.tier, c.latency);
    }

    /// Starts preparing `func`'s artifact at `pop`, making room in the artifact cache by
    /// dropping an artifact of a function that is no longer popular; when none can go,
    /// the function stays forwarded as not ready.
    pub(super) fn prepare(&mut self, now: Nanos, pop: u32, func: u32) {
        let w = self.w;
        let i = self.local_pop(pop);
        let p = &mut self.pops[i];
        if p.artifacts >= w.s.pop.max_artifacts {
            let victim = p
                .ready
                .iter()
                .position(|f| !p.planner.placement().is_popular(f));
            let Some(i) = victim else {
                return;
            };
            let victim = p.ready.remove(i);
            self.removed.clear();
            let before = p.node.used_mb;
            p.node.drop_idle(now, victim, &mut self.removed);
            p.known[victim as usize].artifact = Artifact::Absent;
            p.artifacts -= 1;
            let after = p.node.used_mb;
            self.rec
                .memory_change(Tier::Pop, now, before, after, &self.removed);
        }
        p.known[func as usize].artifact = Artifact::Preparing;
        p.artifacts += 1;
        self.rec.counters.prepares += 1;
        // Fetched from the nearest region (dead or not: artifacts come from the store).
        let rtt = p.views.iter().map(|v| v.rtt).min().unwrap_or(0);
        let ready = now + rtt + w.c.transfer + w.c.deserialize;
        self.queue.push(ready, Event::Prepared { pop, func });
    }

    /// Applies the canary rollout to one invocation: the origin planner picks its runtime
    /// from the real canary's state and the request's draw (`policy::origin::release`),
    /// the simulator draws its outcome, and the planner says what the canary counts
    /// (`policy::origin::after_run`); returns its execution time on that runtime.
    fn canary_exec(&mut self, now: Nanos, func: u32, exec: Nanos) -> Nanos {
        let at = self.at(now);
        let (Some(canary), Some(cfg)) = (self.rollout.as_mut(), self.w.s.canary.as_ref()) else {
            return exec;
        };
        let facts = origin::Facts {
            config: &self.configs[func as usize],
            // The draw is the request id's high half (`policy::canary::draw`).
            request_id: u128::from(self.rng.random::<u64>()) << 64,
            affinity: None,
            canary: Some(canary),
        };
        // No simulated function pins a runtime.
        let plan = self.origin.plan(at, &func, &facts, |_| None);
        let regressed = self.w.functions[func as usize].regressed;
        let error_rate = match plan.release {
            Side::Next if regressed => cfg.regressed_error_rate,
            _ => cfg.base_error_rate,
        };
        let failed = self.rng.random::<f64>() < error_rate;
        self.rec.counters.errors += u64::from(failed);
        match plan.release {
            Side::Current => {
                self.canary.current_invocations += 1;
                self.canary.current_errors += u64::from(failed);
            }
            Side::Next => {
                self.canary.next_invocations += 1;
                self.canary.next_errors += u64::from(failed);
            }
        }
        let ran = Ran::Done {
            platform_fault: failed,
        };
        if let Some((side, failed)) = origin::after_run(plan.release, plan.counted, ran).count {
            canary.handle_outcome(&func, side, failed);
        }
        match plan.release {
            Side::Next => (exec as f64 * cfg.exec_factor) as Nanos,
            Side::Current => exec,
        }
    }
}

#[cfg(test)]
mod overhead_tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_inverse_cdf_returns_each_level_at_its_probability_and_interpolates_between() {
        let values: Vec<Nanos> = (1..=10).map(|v| v * 100).collect();
        for (i, &l) in OVERHEAD_LEVELS.iter().enumerate() {
            assert_eq!(inverse_cdf(&OVERHEAD_LEVELS, &values, l), values[i]);
        }
        assert_eq!(
            inverse_cdf(&OVERHEAD_LEVELS, &values, 0.0),
            100,
            "clamped below"
        );
        assert_eq!(
            inverse_cdf(&OVERHEAD_LEVELS, &values, 1.0),
            1000,
            "clamped above"
        );
        assert_eq!(
            inverse_cdf(&OVERHEAD_LEVELS, &values, 0.375),
            450,
            "halfway 0.25-0.5"
        );
        // Draws reproduce the table's quantiles.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut draws: Vec<Nanos> = (0..100_000)
            .map(|_| inverse_cdf(&OVERHEAD_LEVELS, &values, rng.random::<f64>()))
            .collect();
        draws.sort_unstable();
        for (i, &l) in OVERHEAD_LEVELS.iter().enumerate().take(9) {
            let got = draws[(l * draws.len() as f64) as usize] as f64;
            assert!((got - values[i] as f64).abs() <= 12.0, "level {l}: {got}");
        }
    }
}
