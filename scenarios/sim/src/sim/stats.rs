//! What a simulation records: latency histograms per tier, outcome counters, memory-seconds
//! and a time series in fixed buckets.
//!
//! Memory-seconds are integrated exactly in MB·ns (integers, so the sum does not depend on
//! the order instances are retired in). The series has one bucket per sample interval,
//! allocated up front from the scenario's duration: it never grows during a run.

use super::node::Removed;
use super::queue::Nanos;
use hdrhistogram::Histogram;
use serde::Serialize;
use strata_core::policy::ForwardReason;

/// Where an invocation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// At the POP that received it.
    Pop,
    /// At a region, forwarded by the POP.
    Region,
}

impl Tier {
    /// Both tiers in report order.
    pub const ALL: [Tier; 2] = [Tier::Pop, Tier::Region];

    /// Index into per-tier arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Pop => "pop",
            Tier::Region => "region",
        }
    }
}

/// Every forward reason, in report order.
pub const REASONS: [ForwardReason; 5] = [
    ForwardReason::Rare,
    ForwardReason::Pinned,
    ForwardReason::Unknown,
    ForwardReason::NotReady,
    ForwardReason::OverCapacity,
];

fn reason_index(r: ForwardReason) -> usize {
    match r {
        ForwardReason::Rare => 0,
        ForwardReason::Pinned => 1,
        ForwardReason::Unknown => 2,
        ForwardReason::NotReady => 3,
        ForwardReason::OverCapacity => 4,
    }
}

/// Outcome counters of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Invocations that arrived.
    pub invocations: u64,
    /// Completed, per tier.
    pub completed: [u64; 2],
    /// Cold starts, per tier.
    pub cold_starts: [u64; 2],
    /// Forwards by reason (see [`REASONS`]).
    pub forwards: [u64; 5],
    /// Refused by a region with no free slot or no memory for the instance (429).
    pub throttled_region_capacity: u64,
    /// Refused by a tenant's concurrency limit at a region (429).
    pub throttled_tenant: u64,
    /// No region reachable (503).
    pub unavailable: u64,
    /// In flight at a region when it failed.
    pub lost: u64,
    /// Forwards that found their region dead and went on to the next one.
    pub failovers: u64,
    /// Artifacts a POP prepared (fetch + deserialize).
    pub prepares: u64,
    /// Runs at a region that compiled the function's module (its first there).
    pub region_compiles: u64,
    /// Function errors.
    pub errors: u64,
}

/// Integrates one tier's instance memory over time.
#[derive(Debug, Clone, Copy, Default)]
struct MemoryClock {
    current_mb: u64,
    last: Nanos,
    mb_ns: u128,
}

impl MemoryClock {
    fn advance(&mut self, now: Nanos) {
        let dt = now.saturating_sub(self.last);
        self.mb_ns += u128::from(self.current_mb) * u128::from(dt);
        self.last = self.last.max(now);
    }
}

/// One time-series bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Invocations that arrived in the bucket.
    pub arrivals: u64,
    /// Of which run at the POP.
    pub local: u64,
    /// Of which forwarded.
    pub forwarded: u64,
    /// Cold starts (both tiers).
    pub cold_starts: u64,
    /// Throttled or unavailable.
    pub refused: u64,
    /// Warm instances at POPs at the end of the bucket.
    pub warm_pop: u64,
    /// Warm instances at regions at the end of the bucket.
    pub warm_region: u64,
}

/// Everything a run records.
#[derive(Debug)]
pub struct Recorder {
    /// Latency in microseconds, per tier.
    pub latency: [Histogram<u64>; 2],
    /// Outcome counters.
    pub counters: Counters,
    /// The time series.
    pub series: Vec<Bucket>,
    /// Bucket width.
    pub interval: Nanos,
    memory: [MemoryClock; 2],
}

impl Recorder {
    /// A recorder for a run of `duration` in buckets of `interval`.
    ///
    /// # Errors
    /// When the histogram cannot be created (never for these constant bounds).
    pub fn new(duration: Nanos, interval: Nanos) -> anyhow::Result<Self> {
        // 1 us to 1 hour at 3 significant digits.
        let h = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
        let buckets = duration.div_ceil(interval.max(1)) as usize;
        Ok(Self {
            latency: [h()?, h()?],
            counters: Counters::default(),
            series: vec![Bucket::default(); buckets.max(1)],
            interval: interval.max(1),
            memory: [MemoryClock::default(); 2],
        })
    }

    /// The bucket `now` falls in (the last one for times at or past the end).
    pub fn bucket(&mut self, now: Nanos) -> &mut Bucket {
        let last = self.series.len() - 1;
        let i = ((now / self.interval) as usize).min(last);
        &mut self.series[i]
    }

    /// Records a forward and its reason.
    pub fn forward(&mut self, now: Nanos, reason: ForwardReason) {
        self.counters.forwards[reason_index(reason)] += 1;
        self.bucket(now).forwarded += 1;
    }

    /// Records a completed invocation at `tier` with its end-to-end latency.
    pub fn completed(&mut self, tier: Tier, latency: Nanos) {
        self.counters.completed[tier.index()] += 1;
        self.latency[tier.index()].saturating_record((latency / 1000).max(1));
    }

    /// Records a cold start at `tier`.
    pub fn cold_start(&mut self, now: Nanos, tier: Tier) {
        self.counters.cold_starts[tier.index()] += 1;
        self.bucket(now).cold_starts += 1;
    }

    /// Accounts a change of `tier`'s instance memory at `now`: the node went from
    /// `before_mb` to `after_mb`, and `removed` lists instances that ended at or before now.
    pub fn memory_change(
        &mut self,
        tier: Tier,
        now: Nanos,
        before_mb: u64,
        after_mb: u64,
        removed: &[Removed],
    ) {
        let m = &mut self.memory[tier.index()];
        m.advance(now);
        for r in removed {
            // The instance was counted up to now but ended at `r.at`.
            let overcounted = u128::from(r.memory_mb) * u128::from(now.saturating_sub(r.at));
            m.mb_ns = m.mb_ns.saturating_sub(overcounted);
        }
        m.current_mb = (m.current_mb + after_mb).saturating_sub(before_mb);
    }

    /// Adds what `other` (another shard's recorder over the same run) recorded. Memory
    /// clocks are not merged: take each shard's memory-seconds before.
    ///
    /// # Errors
    /// When the histograms' bounds differ (never for recorders made by [`Self::new`]).
    pub fn absorb(&mut self, other: Recorder) -> anyhow::Result<()> {
        for (h, o) in self.latency.iter_mut().zip(&other.latency) {
            h.add(o)?;
        }
        // Destructured so that a new counter cannot be forgotten here.
        let Counters {
            invocations,
            completed,
            cold_starts,
            forwards,
            throttled_region_capacity,
            throttled_tenant,
            unavailable,
            lost,
            failovers,
            prepares,
            region_compiles,
            errors,
        } = other.counters;
        let c = &mut self.counters;
        c.invocations += invocations;
        add_all(&mut c.completed, &completed);
        add_all(&mut c.cold_starts, &cold_starts);
        add_all(&mut c.forwards, &forwards);
        c.throttled_region_capacity += throttled_region_capacity;
        c.throttled_tenant += throttled_tenant;
        c.unavailable += unavailable;
        c.lost += lost;
        c.failovers += failovers;
        c.prepares += prepares;
        c.region_compiles += region_compiles;
        c.errors += errors;
        for (a, b) in self.series.iter_mut().zip(&other.series) {
            let Bucket {
                arrivals,
                local,
                forwarded,
                cold_starts,
                refused,
                warm_pop,
                warm_region,
            } = *b;
            a.arrivals += arrivals;
            a.local += local;
            a.forwarded += forwarded;
            a.cold_starts += cold_starts;
            a.refused += refused;
            a.warm_pop += warm_pop;
            a.warm_region += warm_region;
        }
        Ok(())
    }

    /// Memory-seconds (MB·s) of `tier` up to `now`.
    pub fn memory_mb_seconds(&mut self, tier: Tier, now: Nanos) -> f64 {
        let m = &mut self.memory[tier.index()];
        m.advance(now);
        m.mb_ns as f64 / 1e9
    }
}

fn add_all(to: &mut [u64], from: &[u64]) {
    to.iter_mut().zip(from).for_each(|(a, b)| *a += b);
}
