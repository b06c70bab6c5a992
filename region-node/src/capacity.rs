//! The region's capacity view (`GET /v1/capacity`, its SSE stream and `/dashboard`): the
//! latest load of this region and of every POP that reports to it, with a short history
//! of each for the dashboard's charts.
//!
//! Bounded: at most `max_pops` POPs (a new POP beyond that is refused until a stale one is
//! dropped) and `history_points` points per node. Also carries the runtime canary's
//! summary (read from its memory). Never performs I/O.

use crate::canary::{RuntimeCanary, RuntimeSummary};
use crate::limits::TenantUsage;
use crate::rollout::{RolloutSummary, Rollouts};
use common::clock::{Clock, SystemClock};
use common::exec::Executor;
use common::model::{
    ApiError, FunctionKey, FunctionName, NodeId, NodeLoad, Qualifier, TenantId, Tier, WindowCounts,
};
use common::policy::resize::MemoryReport;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Bounds of the capacity view.
#[derive(Debug, Clone, Copy)]
pub struct CapacityConfig {
    /// POPs tracked at once.
    pub max_pops: usize,
    /// Points of history kept per node (one per report).
    pub history_points: usize,
    /// A POP that has not reported for this long is shown as stale; after ten times this,
    /// it is dropped.
    pub stale_after: Duration,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            max_pops: 1024,
            history_points: 120,
            stale_after: Duration::from_secs(5),
        }
    }
}

/// One point of a node's time series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Requests per second that ran on the node.
    pub local_rate: f64,
    /// Requests per second it forwarded.
    pub forwarded_rate: f64,
    /// Cold starts per second.
    pub cold_start_rate: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Warm instances.
    pub warm_instances: u64,
    /// In-flight invocations.
    pub in_flight: u64,
}

impl Point {
    fn of(load: &NodeLoad) -> Self {
        let secs = (load.window_ms as f64 / 1000.0).max(1e-3);
        let w: WindowCounts = load.window;
        Self {
            at_unix_ms: load.at_unix_ms,
            local_rate: w.local as f64 / secs,
            forwarded_rate: w.forwarded as f64 / secs,
            cold_start_rate: w.cold_starts as f64 / secs,
            p50_ms: w.latency_p50_us as f64 / 1000.0,
            p99_ms: w.latency_p99_us as f64 / 1000.0,
            warm_instances: load.warm_instances,
            in_flight: load.in_flight,
        }
    }
}

/// One node as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The node's latest report.
    pub load: NodeLoad,
    /// Rates and latency of the latest window (the last point of `history`).
    pub now: Point,
    /// Milliseconds since the report arrived.
    pub age_ms: u64,
    /// No report for longer than the stale bound.
    pub stale: bool,
    /// Oldest first.
    pub history: Vec<Point>,
}

/// The whole view: this region and its POPs.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityView {
    /// This region, once it has taken its first snapshot.
    pub region: Option<NodeView>,
    /// The POPs reporting to this region, by node id.
    pub pops: Vec<NodeView>,
    /// Bumped on every change; the SSE stream's event id.
    pub revision: u64,
    /// The runtime canary's verdicts, when the region runs one.
    pub runtime: Option<RuntimeSummary>,
    /// Alias rollouts judged and rolled back, when the region judges them.
    pub rollouts: Option<RolloutSummary>,
    /// Observed peak memory and the recommended size of the busiest functions shown (at
    /// most [`MAX_PINNED_LISTED`], those with samples), from the region's right-size
    /// statistics (its own runs and its POPs' reports).
    pub memory: Vec<FunctionMemory>,
    /// The region's per-tenant concurrency books (charged across the tiers vs. the current
    /// limit), busiest first, at most [`MAX_BUDGETS`].
    pub budgets: Vec<TenantUsage>,
    /// Tenant TLS certificates, soonest expiry first, at most [`MAX_CERTIFICATES`].
    pub certificates: Vec<CertExpiry>,
}

/// Tenants' books shown in the view at most.
pub const MAX_BUDGETS: usize = 100;

/// Certificates shown in the view at most (the soonest to expire).
pub const MAX_CERTIFICATES: usize = 100;

/// One tenant certificate's expiry, as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertExpiry {
    /// The host it is served for.
    pub host: String,
    /// End of its validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Seconds from the last sample to `not_after` (negative once expired).
    pub expires_in_s: i64,
}

#[derive(Debug)]
struct Entry {
    load: NodeLoad,
    received: Instant,
    history: VecDeque<Point>,
}

impl Entry {
    fn new(load: NodeLoad, now: Instant) -> Self {
        Self {
            load,
            received: now,
            history: VecDeque::new(),
        }
    }

    fn update(&mut self, load: NodeLoad, now: Instant, max_points: usize) {
        if self.history.len() >= max_points {
            self.history.pop_front();
        }
        self.history.push_back(Point::of(&load));
        self.load = load;
        self.received = now;
    }

    fn view(&self, now: Instant, stale_after: Duration) -> NodeView {
        let age = now.saturating_duration_since(self.received);
        NodeView {
            load: self.load.clone(),
            now: Point::of(&self.load),
            age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            stale: age > stale_after,
            history: self.history.iter().copied().collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    region: Option<Entry>,
    pops: HashMap<NodeId, Entry>,
    revision: u64,
    budgets: Vec<TenantUsage>,
    certificates: Vec<CertExpiry>,
}

/// The capacity aggregator.
#[derive(Debug)]
pub struct Capacity {
    config: CapacityConfig,
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    canary: Option<Arc<RuntimeCanary>>,
    rollouts: Option<Arc<Rollouts>>,
    executor: Option<Executor>,
    clock: Arc<dyn Clock>,
}

/// One function's observed memory, for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionMemory {
    /// `tenant/name`.
    pub function: String,
    /// Percentiles, samples, recommendation and learned size of `$LATEST`.
    pub memory: MemoryReport,
}

/// Pinned functions listed by name in the view; the counts cover all of them.
const MAX_PINNED_LISTED: usize = 50;

impl Capacity {
    /// An empty view.
    pub fn new(config: CapacityConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
            changes: watch::channel(0).0,
            canary: None,
            rollouts: None,
            executor: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// This view reading the time (reports' age, staleness) from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The time this view reads.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// This view, also showing `canary`'s verdicts.
    #[must_use]
    pub fn with_canary(mut self, canary: Arc<RuntimeCanary>) -> Self {
        self.canary = Some(canary);
        self
    }

    /// This view, also showing `rollouts`.
    #[must_use]
    pub fn with_rollouts(mut self, rollouts: Arc<Rollouts>) -> Self {
        self.rollouts = Some(rollouts);
        self
    }

    /// This view, also showing what `executor` observed of the busiest functions' memory.
    #[must_use]
    pub fn with_memory(mut self, executor: Executor) -> Self {
        self.executor = Some(executor);
        self
    }

    /// The memory of the functions the nodes list (busiest first), with samples.
    fn memory(&self, nodes: &[&NodeView]) -> Vec<FunctionMemory> {
        let Some(executor) = &self.executor else {
            return Vec::new();
        };
        let mut names: Vec<&str> = Vec::new();
        for f in nodes.iter().flat_map(|n| &n.load.functions) {
            if !names.contains(&f.function.as_str()) && names.len() < MAX_PINNED_LISTED {
                names.push(&f.function);
            }
        }
        names
            .into_iter()
            .filter_map(|name| {
                let (tenant, function) = name.split_once('/')?;
                let key = FunctionKey {
                    tenant: TenantId::new(tenant).ok()?,
                    name: FunctionName::new(function).ok()?,
                };
                let memory = executor.memory_report(&key, &Qualifier::Latest.to_string());
                (memory.samples > 0).then(|| FunctionMemory {
                    function: name.to_owned(),
                    memory,
                })
            })
            .collect()
    }

    /// Takes a POP's report.
    ///
    /// # Errors
    /// 400 when the report does not come from a POP; 503 when `max_pops` POPs are already
    /// tracked and this one is new.
    pub fn report(&self, load: NodeLoad, now: Instant) -> Result<(), ApiError> {
        if load.tier != Tier::Pop {
            return Err(ApiError::bad_request("only POPs report load to a region"));
        }
        let mut inner = self.lock();
        let drop_after = self.config.stale_after * 10;
        inner
            .pops
            .retain(|_, e| now.saturating_duration_since(e.received) <= drop_after);
        let max_points = self.config.history_points;
        let full = inner.pops.len() >= self.config.max_pops;
        match inner.pops.get_mut(&load.node) {
            Some(e) => e.update(load, now, max_points),
            None if full => {
                return Err(ApiError::unavailable(
                    "capacity view is full; the report is dropped",
                    Duration::from_secs(10),
                ));
            }
            None => {
                let node = load.node.clone();
                let mut e = Entry::new(load.clone(), now);
                e.update(load, now, max_points);
                inner.pops.insert(node, e);
            }
        }
        self.bump(&mut inner);
        Ok(())
    }

    /// Takes this region's own snapshot.
    pub fn own(&self, load: NodeLoad, now: Instant) {
        let mut inner = self.lock();
        let max_points = self.config.history_points;
        match &mut inner.region {
            Some(e) => e.update(load, now, max_points),
            None => {
                let mut e = Entry::new(load.clone(), now);
                e.update(load, now, max_points);
                inner.region = Some(e);
            }
        }
        self.bump(&mut inner);
    }

    /// The view at `now`.
    pub fn view(&self, now: Instant) -> CapacityView {
        let inner = self.lock();
        let stale = self.config.stale_after;
        let mut pops: Vec<NodeView> = inner.pops.values().map(|e| e.view(now, stale)).collect();
        pops.sort_by(|a, b| a.load.node.0.cmp(&b.load.node.0));
        let region = inner.region.as_ref().map(|e| e.view(now, stale));
        let memory = self.memory(&region.iter().chain(&pops).collect::<Vec<_>>());
        CapacityView {
            region,
            pops,
            memory,
            revision: inner.revision,
            runtime: self.canary.as_ref().map(|c| c.summary(MAX_PINNED_LISTED)),
            rollouts: self.rollouts.as_ref().map(|r| r.summary(MAX_PINNED_LISTED)),
            budgets: inner.budgets.clone(),
            certificates: inner.certificates.clone(),
        }
    }

    /// Replaces the tenants' books shown (the busiest [`MAX_BUDGETS`]); seen with the next
    /// change.
    pub fn set_budgets(&self, mut budgets: Vec<TenantUsage>) {
        budgets.sort_by(|a, b| b.charged.cmp(&a.charged).then(a.tenant.cmp(&b.tenant)));
        budgets.truncate(MAX_BUDGETS);
        self.lock().budgets = budgets;
    }

    /// Replaces the certificate expiries shown from `expiries` (host, end of validity;
    /// soonest first) at `now_unix_s`; seen with the next change.
    pub fn set_certificates(&self, expiries: &[(String, i64)], now_unix_s: i64) {
        self.lock().certificates = expiries
            .iter()
            .take(MAX_CERTIFICATES)
            .map(|(host, not_after)| CertExpiry {
                host: host.clone(),
                not_after: *not_after,
                expires_in_s: not_after.saturating_sub(now_unix_s),
            })
            .collect();
    }

    /// Wakes on every change (the value is the revision).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self, inner: &mut Inner) {
        inner.revision += 1;
        self.changes.send_replace(inner.revision);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(node: &str, tier: Tier, local: u64) -> NodeLoad {
        NodeLoad {
            node: NodeId(node.into()),
            tier,
            at_unix_ms: 0,
            window_ms: 1000,
            totals: Default::default(),
            window: WindowCounts {
                local,
                ..WindowCounts::default()
            },
            warm_instances: 0,
            warm_memory_bytes: 0,
            in_flight: 0,
            concurrency_limit: 0,
            queue_depth: 0,
            dlq_depth: 0,
            forwards_by_reason: vec![],
            tenants: vec![],
            functions: vec![],
            outcomes: vec![],
        }
    }

    #[test]
    fn pops_are_listed_with_history_and_rates() {
        let c = Capacity::new(CapacityConfig::default());
        let t0 = Instant::now();
        c.report(load("pop-b", Tier::Pop, 5), t0).expect("accepted");
        c.report(load("pop-a", Tier::Pop, 1), t0).expect("accepted");
        c.report(load("pop-a", Tier::Pop, 3), t0 + Duration::from_secs(1))
            .expect("accepted");
        let v = c.view(t0 + Duration::from_secs(1));
        assert_eq!(v.pops.len(), 2);
        assert_eq!(v.pops[0].load.node.0, "pop-a");
        assert_eq!(v.pops[0].history.len(), 2);
        assert_eq!(v.pops[0].now.local_rate, 3.0);
        assert!(!v.pops[0].stale);
        assert_eq!(v.revision, 3);
    }

    #[test]
    fn silent_pops_go_stale_then_away() {
        let c = Capacity::new(CapacityConfig::default());
        let t0 = Instant::now();
        c.report(load("pop-a", Tier::Pop, 1), t0).expect("accepted");
        assert!(c.view(t0 + Duration::from_secs(6)).pops[0].stale);
        c.report(load("pop-b", Tier::Pop, 1), t0 + Duration::from_secs(51))
            .expect("accepted");
        let v = c.view(t0 + Duration::from_secs(51));
        assert_eq!(v.pops.len(), 1);
        assert_eq!(v.pops[0].load.node.0, "pop-b");
    }

    #[test]
    fn the_view_is_bounded_in_pops_and_history() {
        let c = Capacity::new(CapacityConfig {
            max_pops: 2,
            history_points: 3,
            stale_after: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        c.report(load("a", Tier::Pop, 1), t0).expect("accepted");
        c.report(load("b", Tier::Pop, 1), t0).expect("accepted");
        assert!(c.report(load("c", Tier::Pop, 1), t0).is_err());
        for i in 0..10 {
            c.report(load("a", Tier::Pop, i), t0).expect("accepted");
        }
        assert_eq!(c.view(t0).pops[0].history.len(), 3);
    }

    #[test]
    fn only_pops_report() {
        let c = Capacity::new(CapacityConfig::default());
        let err = c
            .report(load("r", Tier::Region, 1), Instant::now())
            .expect_err("refused");
        assert_eq!(err.kind, common::model::ErrorKind::BadRequest);
        assert_eq!(c.view(Instant::now()).revision, 0);
    }
}
