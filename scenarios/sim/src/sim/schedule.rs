//! A shard's first events and where its arrivals come from: the scenario's arrival process
//! (drawn one arrival ahead per POP), a trace (one invocation ahead), or a given schedule
//! of requests ([`super::simulate_schedule`]): the live workload replay hands the simulator
//! the very requests it sends the nodes, so the two sides see the same arrivals.

use super::queue::Nanos;
use super::shard::Shard;
use super::{Event, NO_FUNCTION, SEC, ns, secs_to_ns};
use strata_core::policy::WarmMode;

/// One request of a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// Seconds from the start of the run.
    pub at: f64,
    /// The POP it arrives at.
    pub pop: u32,
    /// The function (index into the population) it invokes.
    pub func: u32,
    /// How long the guest runs, in microseconds (the model's overshoot is added).
    pub exec_us: u64,
}

impl Shard<'_> {
    /// The first request at or after `from` that lands on one of this shard's POPs (and
    /// names a POP and function the scenario has).
    pub(super) fn next_planned_index(&self, from: usize) -> Option<usize> {
        let w = self.w;
        let plan = w.schedule?;
        let pops = w.s.topology.pops as u32;
        (from..plan.len()).find(|&i| {
            let r = plan[i];
            r.pop < pops
                && (r.func as usize) < w.functions.len()
                && w.shard_of_pop(r.pop) == self.id
        })
    }

    /// Schedules request `index` (not before `now`), unless it is past the end.
    pub(super) fn schedule_planned(&mut self, index: usize, now: Nanos) {
        let Some(plan) = self.w.schedule else { return };
        let at = secs_to_ns(plan[index].at);
        if at < self.w.end {
            let index = index as u32;
            self.queue
                .push(at.max(now), Event::PlannedArrival { index });
        }
    }

    /// Request `index` arrives: it is invoked, and the shard's next one scheduled.
    pub(super) fn planned_arrival(&mut self, now: Nanos, index: u32) {
        let Some(plan) = self.w.schedule else { return };
        let r = plan[index as usize];
        let exec = self.with_overshoot(r.exec_us * 1_000);
        self.invoke(now, r.pop, r.func, exec);
        if let Some(next) = self.next_planned_index(index as usize + 1) {
            self.schedule_planned(next, now);
        }
    }

    /// The run's first events: the first arrivals (of the schedule, the trace or the
    /// arrival process), every POP's and region's first ticks and lease round, and the
    /// scenario's region outages.
    pub(super) fn schedule_start(&mut self) {
        let w = self.w;
        match w.trace {
            _ if w.schedule.is_some() => {
                if let Some(first) = self.next_planned_index(0) {
                    self.schedule_planned(first, 0);
                }
            }
            Some(_) => {
                if let Some(first) = self.next_trace_index(0) {
                    self.schedule_trace(first, 0);
                }
            }
            None => {
                for p in self.own_pops() {
                    self.schedule_arrival(p, 0);
                }
            }
        }
        if w.s.pop.warm.mode == WarmMode::Trend {
            let tick = w.s.pop.warm.tick().as_nanos() as Nanos;
            for pop in self.own_pops() {
                if tick < w.end {
                    self.queue.push(tick, Event::WarmTick { pop });
                }
            }
        }
        let report = ns(super::trend::REPORT_EVERY_MS);
        for pop in self.own_pops() {
            if report < w.end {
                self.queue.push(report, Event::ReportTick { pop });
            }
        }
        let tick = ns(w.s.region.trending.tick().as_secs_f64() * 1e3).max(1);
        for region in (0..w.regions as u32).filter(|&r| w.shard_of_region(r) == self.id) {
            if tick < w.end {
                self.queue.push(tick, Event::TrendTick { region });
            }
        }
        let renew = w.leases.renew_ns();
        let first_rounds = w.s.leases.first_round_ms.as_deref().unwrap_or_default();
        for pop in self.own_pops() {
            let first = first_rounds.get(pop as usize).map_or(renew, |&ms| ns(ms));
            if first < w.end {
                self.queue.push(first, Event::LeaseTick { pop });
            }
        }
        for &(region, from, until) in &w.outages {
            if w.shard_of_region(region) == self.id {
                self.queue.push(from, Event::RegionDown { region });
                if until != Nanos::MAX {
                    self.queue.push(until, Event::RegionUp { region });
                }
            }
        }
    }

    /// The first trace invocation at or after `from` that lands on one of this shard's POPs.
    pub(super) fn next_trace_index(&self, from: usize) -> Option<usize> {
        let t = self.w.trace?;
        let pops = self.w.s.topology.pops as u32;
        (from..t.invocations.len()).find(|&i| {
            let pop = t.functions[t.invocations[i].function as usize].app % pops;
            self.w.shard_of_pop(pop) == self.id
        })
    }

    /// Schedules trace invocation `index`, not before `now`.
    pub(super) fn schedule_trace(&mut self, index: usize, now: Nanos) {
        let Some(t) = self.w.trace else { return };
        let at = secs_to_ns(t.invocations[index].arrival);
        if at < self.w.end {
            let index = index as u32;
            self.queue.push(at.max(now), Event::TraceArrival { index });
        }
    }

    /// Schedules the next synthetic arrival at `pop` after `now`.
    pub(super) fn schedule_arrival(&mut self, pop: u32, now: Nanos) {
        let after = now as f64 / SEC;
        if let Some(a) = self.w.profile.next(&mut self.rng, pop as usize, after) {
            let at = secs_to_ns(a.at);
            if at < self.w.end {
                let viral = a.function.map_or(NO_FUNCTION, |f| f as u32);
                self.queue.push(at, Event::Arrival { pop, viral });
            }
        }
    }
}
