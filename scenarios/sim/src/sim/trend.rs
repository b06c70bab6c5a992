//! The regions' trending hints in the simulator, as the nodes do them
//! (region-node/src/trend.rs, pop-node/src/sync.rs): every POP reports its arrivals per
//! function to the region it prefers each report interval (local and forwarded alike: the
//! node's load report), each region feeds them to the nodes' own
//! `strata_core::policy::TrendingPolicy` and, at each of its ticks, hints the functions
//! trending up whose code it has resolved (it ran a forward of them) to the POPs whose
//! push stream it serves; a POP prepares a hinted function's artifact unless it has it,
//! popular here or not. So code trending in the aggregate is ready at a POP before local
//! traffic makes it popular there (no `not_ready` forward), and, its module being ready,
//! even its rare invocations draw the tenant's lease (the edge planner's draw rule).
//!
//! A POP's reports and its push stream go to the region it prefers (the nearest not known
//! down, as its link's preferred connection); hints from another region are not on its
//! stream. A down region receives no reports and sends no hints.

use super::queue::Nanos;
use super::shard::Shard;
use super::{Event, ns};
use std::collections::BTreeMap;
use strata_core::policy::{TrendingConfig, TrendingPolicy};

/// How often a POP sends its load report: the node's `report_interval_ms` default.
pub(super) const REPORT_EVERY_MS: f64 = 1000.0;

/// A POP's arrivals per function since its last report.
pub(super) type Window = BTreeMap<u32, u32>;

/// A region's trend watch: the nodes' policy over the POPs' reports, and which functions'
/// code the region resolved.
#[derive(Debug)]
pub(super) struct Watch {
    policy: TrendingPolicy<u32>,
    resolved: Vec<bool>,
}

impl Watch {
    pub fn new(config: &TrendingConfig, functions: usize) -> Self {
        Self {
            policy: TrendingPolicy::new(config.clone()),
            resolved: vec![false; functions],
        }
    }

    /// The region ran a forward of `func`: it knows its code.
    pub fn resolved(&mut self, func: u32) {
        if let Some(r) = self.resolved.get_mut(func as usize) {
            *r = true;
        }
    }
}

impl Shard<'_> {
    /// The region `pop` reports to and is subscribed to at `now`: the nearest one it does
    /// not know to be down.
    fn preferred(&mut self, now: Nanos, pop: u32) -> Option<u32> {
        self.refresh_views(now, pop);
        let i = self.local_pop(pop);
        self.pops[i]
            .views
            .iter()
            .filter(|v| v.avoid_until <= now)
            .min_by_key(|v| (v.rtt, v.region))
            .map(|v| v.region)
    }

    /// `pop`'s load report: its window's arrivals go to its region, half an RTT away.
    pub(super) fn report_tick(&mut self, now: Nanos, pop: u32) {
        let w = self.w;
        let next = now + ns(REPORT_EVERY_MS);
        if next < w.end {
            self.queue.push(next, Event::ReportTick { pop });
        }
        let i = self.local_pop(pop);
        let window = std::mem::take(&mut self.pops[i].window);
        let Some(region) = self.preferred(now, pop) else {
            return;
        };
        let arrive = now + w.rtt(pop, region) / 2;
        for (func, count) in window {
            let event = Event::Reported {
                region,
                func,
                count,
            };
            self.send(w.shard_of_region(region), arrive, event);
        }
    }

    /// A POP's count of `func` reaches `region`.
    pub(super) fn reported(&mut self, now: Nanos, region: u32, func: u32, count: u32) {
        let at = self.at(now);
        let i = self.local_region(region);
        let r = &mut self.regions[i];
        if r.up {
            r.watch.policy.handle_arrivals(at, &func, u64::from(count));
        }
    }

    /// `region`'s trend tick: hints what trends up to every POP (a POP takes it only from
    /// the region whose push stream it has).
    pub(super) fn trend_tick(&mut self, now: Nanos, region: u32) {
        let w = self.w;
        let next = now + ns(w.s.region.trending.tick().as_secs_f64() * 1e3).max(1);
        if next < w.end {
            self.queue.push(next, Event::TrendTick { region });
        }
        let at = self.at(now);
        let i = self.local_region(region);
        let r = &mut self.regions[i];
        let mut hinted = r.watch.policy.tick(at);
        if !r.up {
            return;
        }
        // In key order (the policy's), so the run does not depend on its table's.
        hinted.retain(|&f| r.watch.resolved.get(f as usize).copied().unwrap_or(false));
        for func in hinted {
            for pop in 0..w.s.topology.pops as u32 {
                let arrive = now + w.rtt(pop, region) / 2;
                self.send(
                    w.shard_of_pop(pop),
                    arrive,
                    Event::Hint { pop, region, func },
                );
            }
        }
    }

    /// `region`'s hint of `func` reaches `pop`: prepared unless it has it, if the hint is
    /// on its push stream.
    pub(super) fn hint(&mut self, now: Nanos, pop: u32, region: u32, func: u32) {
        if self.preferred(now, pop) != Some(region) {
            return;
        }
        let i = self.local_pop(pop);
        if self.pops[i].known[func as usize].artifact == super::node::Artifact::Absent {
            self.prepare(now, pop, func);
        }
    }
}
