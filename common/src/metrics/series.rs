//! Series resolved once and kept: a request's metric updates would otherwise each take a
//! family's lock, hash a label set and allocate its label strings. Series with fixed
//! labels are resolved at their first use; a function's or tenant's names and series at
//! its first invocation, for the first [`MAX_CACHED`] of each (later ones take the
//! uncached path, which gives the same result). Resolving at first use keeps the
//! exposition as it was: a series appears once something counted in it.

use super::Outcome;
use super::prom::{Families, InvocationLabels, ResultLabels, ServedLabels, StatusLabels};
use crate::model::{FunctionKey, StartKind, TenantId, Tier};
use crate::sharded::{read, write};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, RwLock};

/// Functions and tenants whose series are kept.
pub(super) const MAX_CACHED: usize = 4096;

/// Series whose labels never change, resolved at first use.
#[derive(Debug, Default)]
pub(super) struct Fixed {
    exec_local: OnceLock<Histogram>,
    request_local: OnceLock<Histogram>,
    request_forwarded: OnceLock<Histogram>,
    ok_responses: OnceLock<Counter>,
    artifact_hits: OnceLock<Counter>,
    artifact_misses: OnceLock<Counter>,
}

impl Fixed {
    /// `strata_exec_seconds` of local runs.
    pub(super) fn exec_local(&self, prom: &Families, tier: Tier) -> &Histogram {
        self.exec_local
            .get_or_init(|| prom.exec_seconds.get_or_create(&served(tier, true)).clone())
    }

    /// `strata_request_seconds` of requests served here (`local`) or forwarded.
    pub(super) fn request(&self, prom: &Families, tier: Tier, local: bool) -> &Histogram {
        let cell = match local {
            true => &self.request_local,
            false => &self.request_forwarded,
        };
        cell.get_or_init(|| {
            prom.request_seconds
                .get_or_create(&served(tier, local))
                .clone()
        })
    }

    /// `strata_invoke_responses_total` of 200s.
    pub(super) fn ok_responses(&self, prom: &Families, tier: Tier) -> &Counter {
        self.ok_responses.get_or_init(|| {
            prom.responses
                .get_or_create(&StatusLabels {
                    tier: tier.as_str(),
                    code: 200,
                    fault: "none",
                })
                .clone()
        })
    }

    /// `strata_artifact_cache_lookups_total` of hits or misses.
    pub(super) fn artifact_lookups(&self, prom: &Families, hit: bool) -> &Counter {
        let (cell, result) = match hit {
            true => (&self.artifact_hits, "hit"),
            false => (&self.artifact_misses, "miss"),
        };
        cell.get_or_init(|| {
            prom.artifact_cache_lookups
                .get_or_create(&ResultLabels { result })
                .clone()
        })
    }
}

fn served(tier: Tier, local: bool) -> ServedLabels {
    ServedLabels {
        tier: tier.as_str(),
        served: if local { "local" } else { "forwarded" },
    }
}

/// A function's names and its `strata_invocations_total` series.
#[derive(Debug)]
pub(super) struct FunctionSeries {
    /// `tenant/name`: the load window's key.
    pub(super) name: String,
    /// Its label value (itself, or the shared one past the label bound).
    label: String,
    /// By outcome, then start kind (cold, warm).
    invocations: [[OnceLock<Counter>; 2]; 4],
}

impl FunctionSeries {
    pub(super) fn new(name: String, label: String) -> Self {
        Self {
            name,
            label,
            invocations: Default::default(),
        }
    }

    /// The counter of invocations that ended with `outcome` after a `start`.
    pub(super) fn invocations(
        &self,
        prom: &Families,
        tier: Tier,
        outcome: Outcome,
        start: StartKind,
    ) -> &Counter {
        let by_outcome = match outcome {
            Outcome::Ok => 0,
            Outcome::Unhandled => 1,
            Outcome::OutOfMemory => 2,
            Outcome::Timeout => 3,
        };
        let by_start = usize::from(start == StartKind::Warm);
        self.invocations[by_outcome][by_start].get_or_init(|| {
            prom.invocations
                .get_or_create(&InvocationLabels {
                    tier: tier.as_str(),
                    function: self.label.clone(),
                    outcome: outcome.as_str(),
                    start: start.as_str(),
                })
                .clone()
        })
    }
}

/// A tenant's name and its `strata_in_flight` series.
#[derive(Debug)]
pub(super) struct TenantSeries {
    /// The tenant's name: the load window's key.
    pub(super) name: String,
    pub(super) in_flight: Gauge,
}

/// What was resolved for up to [`MAX_CACHED`] keys.
#[derive(Debug)]
pub(super) struct Cache<K, V> {
    map: RwLock<HashMap<K, Arc<V>>>,
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Cache<K, V> {
    /// The value kept for `key`, made by `make` and kept if there is room; `None` once
    /// the cache is full and `key` is not in it.
    pub(super) fn get(&self, key: &K, make: impl FnOnce() -> V) -> Option<Arc<V>> {
        if let Some(v) = read(&self.map).get(key) {
            return Some(Arc::clone(v));
        }
        let mut map = write(&self.map);
        if let Some(v) = map.get(key) {
            return Some(Arc::clone(v));
        }
        if map.len() >= MAX_CACHED {
            return None;
        }
        let v = Arc::new(make());
        map.insert(key.clone(), Arc::clone(&v));
        Some(v)
    }
}

/// The caches a node's stats keep.
#[derive(Debug, Default)]
pub(super) struct Caches {
    pub(super) fixed: Fixed,
    pub(super) functions: Cache<FunctionKey, FunctionSeries>,
    pub(super) tenants: Cache<TenantId, TenantSeries>,
}
