//! What a node measures about itself: Prometheus metrics for `/metrics` and the windowed
//! [`NodeLoad`] a node reports to its region every second for the capacity dashboard.
//!
//! One [`NodeStats`] per node, shared by `Arc`; recording is a few atomic updates and
//! short updates of one shard ([`crate::sharded`]: by function, by tenant, or the worker's
//! own), never a node-wide lock and never I/O; a report merges the shards. Every map here is bounded (functions and tenants
//! beyond a fixed count are aggregated), so a flood of distinct names cannot grow memory.
//! Prometheus label values naming tenants and functions are bounded the same way: the
//! first [`MAX_LABEL_VALUES`] distinct names keep their own series, later ones share the
//! [`OTHER_LABEL`] series.

mod load;
mod outcomes;
pub use outcomes::MAX_REPORTED_PEAKS;
mod prom;
mod series;

use crate::model::{FunctionKey, NodeId, NodeLoad, StartKind, TenantId, Tier};
use crate::sharded::{SHARDS, Sharded, read, write};
use load::{MAX_FUNCTIONS, MAX_TENANTS, TenantCounters, Window};
use prom::{Families, InvocationLabels, ReasonLabels, RegionLabels, TenantLabels};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Distinct tenant and function names used as label values; more share [`OTHER_LABEL`].
pub const MAX_LABEL_VALUES: usize = 1000;

/// The label value of every tenant or function beyond [`MAX_LABEL_VALUES`].
pub const OTHER_LABEL: &str = "_other";

/// How an invocation ended, as in the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest succeeded.
    Ok,
    /// The guest exited non-zero or trapped.
    Unhandled,
    /// The guest ran out of memory.
    OutOfMemory,
    /// The guest ran out of time.
    Timeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unhandled => "unhandled",
            Self::OutOfMemory => "out-of-memory",
            Self::Timeout => "timeout",
        }
    }
}

/// Gauges the node samples from its components before each report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levels {
    /// Warm instances and prepared modules held.
    pub warm_instances: u64,
    /// Memory they reserve, in bytes.
    pub warm_memory_bytes: u64,
    /// Compiled-module cache size in bytes.
    pub artifact_cache_bytes: u64,
    /// The node's execution slots.
    pub concurrency_limit: u64,
    /// Invocations waiting for a slot.
    pub queue_depth: u64,
    /// Dead-letter queue entries.
    pub dlq_depth: u64,
}

/// A node's metrics and load window.
#[derive(Debug)]
pub struct NodeStats {
    node: NodeId,
    tier: Tier,
    prom: Families,
    /// The load window: a function's counts in its key's shard, request latencies in the
    /// recording worker's.
    window: Sharded<Window>,
    window_start: Mutex<Instant>,
    /// In-flight counts by tenant name.
    tenants: Sharded<HashMap<String, TenantCounters>>,
    levels: Mutex<Levels>,
    /// Outcomes per function version since the last report, by function.
    outcomes: Sharded<outcomes::Tally>,
    /// Tenant and function names admitted as label values.
    labels: RwLock<std::collections::HashSet<String>>,
    /// Series and names resolved once.
    cache: series::Caches,
}

impl NodeStats {
    /// Stats for node `node` of `tier`; `now` starts the first window.
    pub fn new(node: NodeId, tier: Tier, now: Instant) -> Arc<Self> {
        Arc::new(Self {
            node,
            tier,
            prom: Families::new(),
            window: Sharded::new(|_| Window::with_max_functions(MAX_FUNCTIONS / SHARDS)),
            window_start: Mutex::new(now),
            tenants: Sharded::default(),
            levels: Mutex::new(Levels::default()),
            outcomes: Sharded::new(|_| outcomes::Tally::with_max_keys(outcomes::MAX_KEYS / SHARDS)),
            labels: RwLock::new(std::collections::HashSet::new()),
            cache: series::Caches::default(),
        })
    }

    /// `name` as a label value: itself while it is among the first [`MAX_LABEL_VALUES`]
    /// names seen, [`OTHER_LABEL`] otherwise.
    fn label(&self, name: &str) -> String {
        // Read-locked on the per-request path: a name is admitted once, then only read.
        if read(&self.labels).contains(name) {
            return name.to_owned();
        }
        let mut seen = write(&self.labels);
        if seen.contains(name) || (seen.len() < MAX_LABEL_VALUES && seen.insert(name.to_owned())) {
            name.to_owned()
        } else {
            OTHER_LABEL.to_owned()
        }
    }

    /// The node's tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// An invocation of `function` ran on this node.
    pub fn executed(
        &self,
        function: &FunctionKey,
        start: StartKind,
        outcome: Outcome,
        exec: Duration,
    ) {
        let series = self.cache.functions.get(function, || {
            let name = function.to_string();
            let label = self.label(&name);
            series::FunctionSeries::new(name, label)
        });
        let uncached;
        let name = match &series {
            Some(s) => {
                s.invocations(&self.prom, self.tier, outcome, start).inc();
                s.name.as_str()
            }
            None => {
                uncached = function.to_string();
                self.prom
                    .invocations
                    .get_or_create(&InvocationLabels {
                        tier: self.tier.as_str(),
                        function: self.label(&uncached),
                        outcome: outcome.as_str(),
                        start: start.as_str(),
                    })
                    .inc();
                uncached.as_str()
            }
        };
        self.cache
            .fixed
            .exec_local(&self.prom, self.tier)
            .observe(exec.as_secs_f64());
        self.window
            .by_key(name)
            .executed(name, start == StartKind::Cold, outcome != Outcome::Ok);
    }

    /// An invocation of `version` of `function` ran here and ended with a function error
    /// (`error`), a platform failure among those (`platform_failure`), or neither;
    /// `canary_release` names the release the runtime canary sampled for it. Tallied for
    /// the next report's `outcomes` with its `peak_bytes`, when it ran a guest (bounded:
    /// see `outcomes.rs`).
    pub fn outcome(
        &self,
        function: &FunctionKey,
        version: &str,
        canary_release: Option<&str>,
        error: bool,
        platform_failure: bool,
        peak_bytes: Option<u64>,
    ) {
        self.outcomes.by_key(function).add(
            function,
            version,
            canary_release,
            error,
            platform_failure,
            peak_bytes,
        );
    }

    /// This POP forwarded an invocation of `function` (`tenant/name`) to a region because
    /// of `reason`.
    pub fn forwarded(&self, function: &str, reason: &'static str) {
        self.prom
            .forwards
            .get_or_create(&ReasonLabels { reason })
            .inc();
        self.window.by_key(function).forwarded(function, reason);
    }

    /// An async event was accepted, retried or dead-lettered at this region (`outcome`:
    /// `accepted`, `retried`, `dead_lettered`).
    pub fn event(&self, outcome: &'static str) {
        self.prom
            .events
            .get_or_create(&prom::EventLabels { outcome })
            .inc();
    }

    /// A device request at this node's HTTP edge finished after `latency`; `local` says
    /// whether it ran on this node.
    pub fn request(&self, local: bool, latency: Duration) {
        self.cache
            .fixed
            .request(&self.prom, self.tier, local)
            .observe(latency.as_secs_f64());
        self.window.local().request(local, latency);
    }

    /// An invoke request at this node's HTTP edge was answered with `status`, an error
    /// being `fault`'s (`None` for a success: labelled `fault="none"`).
    pub fn response(&self, status: u16, fault: Option<crate::model::Fault>) {
        if status == 200 && fault.is_none() {
            self.cache.fixed.ok_responses(&self.prom, self.tier).inc();
            return;
        }
        self.prom
            .responses
            .get_or_create(&prom::StatusLabels {
                tier: self.tier.as_str(),
                code: status,
                fault: fault.map_or("none", crate::model::Fault::as_str),
            })
            .inc();
    }

    /// Counts an invocation of `tenant` in flight until the guard drops; `limit` is the
    /// tenant's concurrency limit at this node, when one applies.
    pub fn in_flight(self: &Arc<Self>, tenant: &TenantId, limit: Option<u64>) -> InFlight {
        let make = || {
            let name = tenant.to_string();
            let labels = TenantLabels {
                tenant: self.label(&name),
            };
            // The gauge itself (it shares its counter with the family's series), so
            // neither this nor the guard's drop needs a label lookup.
            let in_flight = self.prom.in_flight.get_or_create(&labels).clone();
            series::TenantSeries { name, in_flight }
        };
        let series = match self.cache.tenants.get(tenant, make) {
            Some(s) => s,
            None => Arc::new(make()),
        };
        {
            let name = &series.name;
            let mut tenants = self.tenants.by_key(name);
            if !tenants.contains_key(name) && tenants.len() < MAX_TENANTS / SHARDS {
                tenants.insert(name.clone(), TenantCounters::default());
            }
            if let Some(c) = tenants.get_mut(name) {
                c.in_flight += 1;
                c.peak = c.peak.max(c.in_flight);
                c.limit = limit.or(c.limit);
            }
        }
        series.in_flight.inc();
        if let Some(l) = limit {
            let labels = TenantLabels {
                tenant: self.label(&series.name),
            };
            self.prom
                .concurrency_limit
                .get_or_create(&labels)
                .set(i64::try_from(l).unwrap_or(i64::MAX));
        }
        InFlight {
            stats: Arc::clone(self),
            tenant: series,
        }
    }

    /// The region's books for `tenant`: `charged` slots (leased plus running at the region)
    /// against its current `limit`. Also fills the tenant's limit in load reports.
    pub fn tenant_budget(&self, tenant: &TenantId, charged: u64, limit: u64) {
        let name = tenant.to_string();
        {
            let mut tenants = self.tenants.by_key(&name);
            if let Some(c) = tenants.get_mut(&name) {
                c.limit = Some(limit);
            }
        }
        let labels = TenantLabels {
            tenant: self.label(&name),
        };
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.prom
            .tenant_concurrency
            .get_or_create(&labels)
            .set(g(charged));
        self.prom
            .tenant_concurrency_limit
            .get_or_create(&labels)
            .set(g(limit));
        self.prom
            .concurrency_limit
            .get_or_create(&labels)
            .set(g(limit));
    }

    /// An artifact cache lookup hit or missed.
    pub fn artifact_lookup(&self, hit: bool) {
        self.cache.fixed.artifact_lookups(&self.prom, hit).inc();
    }

    /// The smoothed QUIC round-trip time to `region`.
    pub fn quic_rtt(&self, region: &str, rtt: Duration) {
        self.prom
            .quic_rtt_seconds
            .get_or_create(&RegionLabels {
                region: region.to_owned(),
            })
            .set(rtt.as_secs_f64());
    }

    /// Sets `strata_certificate_expiry_seconds` from `expiries` (host, end of validity in
    /// Unix seconds) at `now_unix_s`, replacing the previous series. The soonest
    /// [`MAX_LABEL_VALUES`] hosts keep their own series; the rest share [`OTHER_LABEL`],
    /// which shows the soonest of them.
    pub fn certificate_expiries(&self, expiries: &[(String, i64)], now_unix_s: i64) {
        let mut soonest: Vec<&(String, i64)> = expiries.iter().collect();
        soonest.sort_by_key(|(_, end)| *end);
        let family = &self.prom.certificate_expiry_seconds;
        family.clear();
        for (i, (host, end)) in soonest.into_iter().enumerate() {
            let host = if i < MAX_LABEL_VALUES {
                host.clone()
            } else {
                OTHER_LABEL.to_owned()
            };
            let gauge = family.get_or_create(&prom::HostLabels { host });
            if i <= MAX_LABEL_VALUES {
                gauge.set(end.saturating_sub(now_unix_s));
            }
        }
    }

    /// Sets the sampled gauges.
    pub fn set_levels(&self, levels: Levels) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.prom.warm_instances.set(g(levels.warm_instances));
        self.prom.warm_memory_bytes.set(g(levels.warm_memory_bytes));
        self.prom
            .artifact_cache_bytes
            .set(g(levels.artifact_cache_bytes));
        self.prom
            .node_concurrency_limit
            .set(g(levels.concurrency_limit));
        self.prom.queue_depth.set(g(levels.queue_depth));
        self.prom.dlq_depth.set(g(levels.dlq_depth));
        *lock(&self.levels) = levels;
    }

    /// Closes the current window at `now` (`unix_ms` is the same moment on the wall
    /// clock) and returns the node's load.
    pub fn snapshot(&self, now: Instant, unix_ms: u64) -> NodeLoad {
        let window = {
            let mut start = lock(&self.window_start);
            let w = now.saturating_duration_since(*start);
            *start = now;
            w
        };
        let (totals, closed) = {
            let mut w = Window::with_max_functions(usize::MAX);
            self.window.each(|shard| shard.fold_into(&mut w));
            let closed = w.close();
            (w.totals, closed)
        };
        let mut tenants = Vec::new();
        self.tenants
            .each(|shard| tenants.extend(load::close_tenants(shard)));
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let mut outcomes = Vec::new();
        self.outcomes.each(|shard| {
            let room = outcomes::REPORTED - outcomes.len();
            outcomes.extend(shard.drain_at_most(room));
        });
        let levels = *lock(&self.levels);
        NodeLoad {
            node: self.node.clone(),
            tier: self.tier,
            at_unix_ms: unix_ms,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            totals,
            window: closed.window,
            warm_instances: levels.warm_instances,
            warm_memory_bytes: levels.warm_memory_bytes,
            in_flight: tenants.iter().map(|t| t.in_flight).sum(),
            concurrency_limit: levels.concurrency_limit,
            queue_depth: levels.queue_depth,
            dlq_depth: levels.dlq_depth,
            forwards_by_reason: closed.forwards_by_reason,
            tenants,
            functions: closed.functions,
            outcomes,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only be a formatting bug.
        let _infallible = prometheus_client::encoding::text::encode(&mut out, &self.prom.registry);
        out
    }
}

/// An invocation in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<NodeStats>,
    /// The tenant's name and `strata_in_flight` series.
    tenant: Arc<series::TenantSeries>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let name = &self.tenant.name;
        if let Some(c) = self.stats.tenants.by_key(name).get_mut(name) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        self.tenant.in_flight.dec();
    }
}

/// Stats stay usable after a panic elsewhere: counters are plain data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
