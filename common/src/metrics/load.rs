//! Windowed load aggregation: what a node reports to its region each second.

use crate::model::{FunctionLoad, LoadTotals, TenantLoad, WindowCounts};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::Duration;

/// Functions tracked individually; beyond this, activity counts under [`OTHER`] so a
/// flood of distinct names cannot grow the map.
pub(super) const MAX_FUNCTIONS: usize = 4096;
/// Functions listed in one report, busiest first.
pub(super) const REPORTED_FUNCTIONS: usize = 50;
/// The bucket for functions beyond [`MAX_FUNCTIONS`].
pub(super) const OTHER: &str = "(other)";

#[derive(Debug, Default, Clone, Copy)]
struct FunctionCounters {
    executed: u64,
    forwarded: u64,
    cold_starts: u64,
    in_window: u64,
}

/// Counters since start plus the current window.
#[derive(Debug)]
pub(super) struct Window {
    /// Functions this window tracks by name; beyond, they count under [`OTHER`].
    max_functions: usize,
    pub totals: LoadTotals,
    local: u64,
    forwarded: u64,
    cold: u64,
    latency_us: Histogram<u64>,
    functions: HashMap<String, FunctionCounters>,
    forwards_by_reason: Vec<(&'static str, u64)>,
}

impl Window {
    /// A window tracking at most `max_functions` by name (a shard of a node's window
    /// holds its share of [`MAX_FUNCTIONS`]).
    pub fn with_max_functions(max_functions: usize) -> Self {
        Self {
            max_functions,
            totals: LoadTotals::default(),
            local: 0,
            forwarded: 0,
            cold: 0,
            // 1 µs .. 1 h at 2 significant digits: a few KiB, fixed.
            // Constant, valid bounds: this cannot fail.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("constant histogram bounds are valid"),
            functions: HashMap::new(),
            forwards_by_reason: Vec::new(),
        }
    }

    /// The counters of `name`, or of [`OTHER`] once the map is full; a name is copied
    /// only when it is new.
    fn function(&mut self, name: &str) -> Option<&mut FunctionCounters> {
        let key =
            if self.functions.len() >= self.max_functions && !self.functions.contains_key(name) {
                OTHER
            } else {
                name
            };
        if !self.functions.contains_key(key) {
            self.functions
                .insert(key.to_owned(), FunctionCounters::default());
        }
        self.functions.get_mut(key)
    }

    pub fn executed(&mut self, function: &str, cold: bool, failed: bool) {
        self.totals.executed += 1;
        self.totals.cold_starts += u64::from(cold);
        self.totals.failed += u64::from(failed);
        self.cold += u64::from(cold);
        if let Some(f) = self.function(function) {
            f.executed += 1;
            f.cold_starts += u64::from(cold);
            f.in_window += 1;
        }
    }

    pub fn forwarded(&mut self, function: &str, reason: &'static str) {
        self.totals.forwarded += 1;
        if let Some(f) = self.function(function) {
            f.forwarded += 1;
            f.in_window += 1;
        }
        match self
            .forwards_by_reason
            .iter_mut()
            .find(|(r, _)| *r == reason)
        {
            Some((_, n)) => *n += 1,
            None => self.forwards_by_reason.push((reason, 1)),
        }
    }

    pub fn request(&mut self, local: bool, latency: Duration) {
        if local {
            self.local += 1;
        } else {
            self.forwarded += 1;
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(us);
    }

    /// Adds everything this window counted to `into` (a merge of a node's shards) and
    /// starts this one's next window; the counts since start stay here as well.
    pub fn fold_into(&mut self, into: &mut Window) {
        let (t, i) = (&self.totals, &mut into.totals);
        i.executed += t.executed;
        i.cold_starts += t.cold_starts;
        i.forwarded += t.forwarded;
        i.failed += t.failed;
        into.local += self.local;
        into.forwarded += self.forwarded;
        into.cold += self.cold;
        // Same bounds on both sides: adding cannot fail.
        let _same_bounds = into.latency_us.add(&self.latency_us);
        for (name, c) in &mut self.functions {
            let f = into.functions.entry(name.clone()).or_default();
            f.executed += c.executed;
            f.forwarded += c.forwarded;
            f.cold_starts += c.cold_starts;
            f.in_window += c.in_window;
            c.in_window = 0;
        }
        for &(reason, n) in &self.forwards_by_reason {
            match into
                .forwards_by_reason
                .iter_mut()
                .find(|(r, _)| *r == reason)
            {
                Some((_, m)) => *m += n,
                None => into.forwards_by_reason.push((reason, n)),
            }
        }
        self.local = 0;
        self.forwarded = 0;
        self.cold = 0;
        self.latency_us.reset();
    }

    /// Closes the window and returns what it saw.
    pub fn close(&mut self) -> Closed {
        let pct = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let mut functions: Vec<FunctionLoad> = self
            .functions
            .iter()
            .map(|(name, c)| FunctionLoad {
                function: name.clone(),
                executed: c.executed,
                forwarded: c.forwarded,
                cold_starts: c.cold_starts,
                in_window: c.in_window,
            })
            .collect();
        functions.sort_by(|a, b| {
            b.in_window
                .cmp(&a.in_window)
                .then((b.executed + b.forwarded).cmp(&(a.executed + a.forwarded)))
                .then(a.function.cmp(&b.function))
        });
        functions.truncate(REPORTED_FUNCTIONS);
        let closed = Closed {
            window: WindowCounts {
                local: self.local,
                forwarded: self.forwarded,
                cold_starts: self.cold,
                latency_p50_us: pct(&self.latency_us, 0.5),
                latency_p99_us: pct(&self.latency_us, 0.99),
            },
            forwards_by_reason: self
                .forwards_by_reason
                .iter()
                .map(|(r, n)| ((*r).to_owned(), *n))
                .collect(),
            functions,
        };
        self.local = 0;
        self.forwarded = 0;
        self.cold = 0;
        self.latency_us.reset();
        for c in self.functions.values_mut() {
            c.in_window = 0;
        }
        closed
    }
}

/// What one window saw.
#[derive(Debug)]
pub(super) struct Closed {
    pub window: WindowCounts,
    pub forwards_by_reason: Vec<(String, u64)>,
    pub functions: Vec<FunctionLoad>,
}

/// One tenant's in-flight count and the window's peak.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TenantCounters {
    pub in_flight: u64,
    pub peak: u64,
    pub limit: Option<u64>,
}

/// Tenants tracked individually at one node; beyond this, new tenants are not listed in
/// reports (their invocations still count in the node's totals).
pub(super) const MAX_TENANTS: usize = 4096;

/// The tenants part of a report: those with work in flight or a non-zero peak in the
/// window; the peaks reset.
pub(super) fn close_tenants(tenants: &mut HashMap<String, TenantCounters>) -> Vec<TenantLoad> {
    let mut out: Vec<TenantLoad> = tenants
        .iter_mut()
        .filter(|(_, c)| c.in_flight > 0 || c.peak > 0)
        .map(|(t, c)| {
            let load = TenantLoad {
                tenant: t.clone(),
                in_flight: c.in_flight,
                peak_in_flight: c.peak,
                limit: c.limit,
            };
            c.peak = c.in_flight;
            load
        })
        .collect();
    tenants.retain(|_, c| c.in_flight > 0 || c.peak > 0 || c.limit.is_some());
    out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    out
}
