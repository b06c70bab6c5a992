//! Replaying a given schedule of requests instead of the scenario's arrival process
//! ([`super::simulate_schedule`]): the live workload replay hands the simulator the very
//! requests it sends the nodes, so the two sides see the same arrivals.

use super::queue::Nanos;
use super::shard::Shard;
use super::{Event, secs_to_ns};

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
}
