//! The `[leases]` section.

use serde::Deserialize;

/// The tenants' concurrency leases (`strata_core::policy::lease`): a POP runs an
/// invocation locally only with a free slot of its tenant's lease; it asks the region that
/// serves its forwards for a batch when it runs low, renews every third of the TTL and
/// gives back its surplus. Defaults are the nodes'.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseModel {
    /// Slots asked for at a time; also how many free slots a busy tenant keeps, and the
    /// most an idle one keeps (the POP's `lease_batch`). Default 4.
    pub batch: u32,
    /// How long a POP may draw from a lease after asking for it or its renewal, ms (the
    /// POP's `lease_ttl_ms` and the region's `limits.lease_ttl_ms`); renewals come every
    /// third of it. Default 3000.
    pub ttl_ms: u64,
    /// How long a quiet tenant keeps a floor of free slots after its last draw, ms (the
    /// POP's `lease_idle_hold_ms`). Default 60 000.
    pub idle_hold_ms: u64,
    /// How much longer than the TTL a region counts a lease that was not renewed, ms (the
    /// region's `limits.lease_grace_ms`). Default 60 000.
    pub grace_ms: u64,
    /// When each POP's first renewal round starts, ms after the run's start, by POP
    /// index; the next ones follow every third of the TTL. Default (and for POPs beyond
    /// the list): one period in. The workload replay sets it to its live POPs' phase
    /// (their rounds started when the POPs did, before the replay's first request): which
    /// round a region's failure falls in decides whether a tenant's lease survives it.
    pub first_round_ms: Option<Vec<f64>>,
}

impl Default for LeaseModel {
    fn default() -> Self {
        Self {
            batch: 4,
            ttl_ms: 3000,
            idle_hold_ms: 60_000,
            grace_ms: 60_000,
            first_round_ms: None,
        }
    }
}
