//! The Prometheus metric families of a node, with conventional names and units
//! (`_total`, `_seconds`, `_bytes`). prometheus-client appends `_total` to counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of `strata_invocations_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InvocationLabels {
    pub tier: &'static str,
    pub function: String,
    pub outcome: &'static str,
    pub start: &'static str,
}

/// Labels of the request latency histogram: where the request was served from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ServedLabels {
    pub tier: &'static str,
    pub served: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabels {
    pub tier: &'static str,
    pub code: u16,
    /// Whose fault an error response was (`device`, `capacity`, `internal`, `guest`,
    /// `peer`), `none` for a success.
    pub fault: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EventLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TenantLabels {
    pub tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RegionLabels {
    pub region: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HostLabels {
    pub host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub result: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// 50 µs to ~13 s in 19 doubling buckets: covers a warm local call and a timed-out one.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 19))
}

/// Every family a node exports.
#[derive(Debug)]
pub(super) struct Families {
    pub registry: Registry,
    pub invocations: Family<InvocationLabels, Counter>,
    pub exec_seconds: Family<ServedLabels, Histogram, fn() -> Histogram>,
    pub request_seconds: Family<ServedLabels, Histogram, fn() -> Histogram>,
    pub forwards: Family<ReasonLabels, Counter>,
    pub responses: Family<StatusLabels, Counter>,
    pub warm_instances: Gauge,
    pub warm_memory_bytes: Gauge,
    pub in_flight: Family<TenantLabels, Gauge>,
    pub concurrency_limit: Family<TenantLabels, Gauge>,
    pub node_concurrency_limit: Gauge,
    pub queue_depth: Gauge,
    pub dlq_depth: Gauge,
    pub artifact_cache_bytes: Gauge,
    pub artifact_cache_lookups: Family<ResultLabels, Counter>,
    pub quic_rtt_seconds: Family<RegionLabels, FloatGauge>,
    pub events: Family<EventLabels, Counter>,
    pub tenant_concurrency: Family<TenantLabels, Gauge>,
    pub tenant_concurrency_limit: Family<TenantLabels, Gauge>,
    pub certificate_expiry_seconds: Family<HostLabels, Gauge>,
}

impl Families {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strata");
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations executed on this node, by tier, function, outcome and start kind",
            invocations.clone(),
        );
        let exec_seconds: Family<ServedLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "execution_duration_seconds",
            "Guest execution time of invocations run on this node",
            exec_seconds.clone(),
        );
        let request_seconds: Family<ServedLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "End-to-end latency of invoke requests at this node's HTTP edge, by where they ran",
            request_seconds.clone(),
        );
        let forwards = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "forwards",
            "Invocations this POP forwarded to a region, by reason",
            forwards.clone(),
        );
        let responses = Family::<StatusLabels, Counter>::default();
        registry.register(
            "invoke_responses",
            "Invoke responses at this node's HTTP edge by status code (429 = throttled, 503 = no capacity) and fault (device, capacity, internal, guest, peer; none for a success)",
            responses.clone(),
        );
        let warm_instances = Gauge::default();
        registry.register(
            "warm_instances",
            "Warm sandbox instances and prepared modules held",
            warm_instances.clone(),
        );
        let warm_memory_bytes = Gauge::default();
        registry.register(
            "warm_memory_bytes",
            "Memory reserved by warm instances",
            warm_memory_bytes.clone(),
        );
        let in_flight = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "concurrency_in_use",
            "Invocations in flight at this node, per tenant",
            in_flight.clone(),
        );
        let concurrency_limit = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "concurrency_limit",
            "Current concurrency limit per tenant at this node",
            concurrency_limit.clone(),
        );
        let node_concurrency_limit = Gauge::default();
        registry.register(
            "node_concurrency_limit",
            "Execution slots of this node",
            node_concurrency_limit.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Invocations waiting for an execution slot, and async events queued or running",
            queue_depth.clone(),
        );
        let dlq_depth = Gauge::default();
        registry.register(
            "dlq_depth",
            "Entries in the dead-letter queue",
            dlq_depth.clone(),
        );
        let artifact_cache_bytes = Gauge::default();
        registry.register(
            "artifact_cache_bytes",
            "Bytes of compiled modules held in memory",
            artifact_cache_bytes.clone(),
        );
        let artifact_cache_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            "artifact_cache_lookups",
            "Artifact cache lookups by result (hit, miss); the hit ratio is hit / (hit + miss)",
            artifact_cache_lookups.clone(),
        );
        let quic_rtt_seconds = Family::<RegionLabels, FloatGauge>::default();
        registry.register(
            "quic_rtt_seconds",
            "Smoothed QUIC round-trip time to each region",
            quic_rtt_seconds.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Async events at this region by outcome (accepted, retried, dead_lettered)",
            events.clone(),
        );
        let tenant_concurrency = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "tenant_concurrency",
            "Region only: a tenant's concurrency charged across the tiers (slots leased to \
             POPs plus invocations running at the region)",
            tenant_concurrency.clone(),
        );
        let tenant_concurrency_limit = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "tenant_concurrency_limit",
            "Region only: a tenant's current adaptive concurrency limit",
            tenant_concurrency_limit.clone(),
        );
        let certificate_expiry_seconds = Family::<HostLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_seconds",
            "Region only: seconds until each tenant TLS certificate expires (negative once \
             expired); hosts past the label cap share the `_other` series, the soonest of them",
            certificate_expiry_seconds.clone(),
        );
        Self {
            registry,
            certificate_expiry_seconds,
            events,
            invocations,
            exec_seconds,
            request_seconds,
            forwards,
            responses,
            warm_instances,
            warm_memory_bytes,
            in_flight,
            concurrency_limit,
            node_concurrency_limit,
            queue_depth,
            dlq_depth,
            artifact_cache_bytes,
            artifact_cache_lookups,
            quic_rtt_seconds,
            tenant_concurrency,
            tenant_concurrency_limit,
        }
    }
}
