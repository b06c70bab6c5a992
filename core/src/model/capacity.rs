//! Load reports and the capacity view (DESIGN §5, `GET /v1/capacity`): what every node
//! measures about itself each second, what POPs send their region, and what the region
//! shows its operators.

use super::NodeId;
use serde::{Deserialize, Serialize};

/// Which tier a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// An edge node close to devices.
    #[default]
    Pop,
    /// A region node (the origin).
    Region,
}

impl Tier {
    /// `pop` or `region`, as in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pop => "pop",
            Self::Region => "region",
        }
    }
}

/// One node's load: cumulative counters since the node started plus rates and latency
/// percentiles over the last report window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// The reporting node.
    pub node: NodeId,
    /// Its tier.
    pub tier: Tier,
    /// When the report was taken, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Length of the window the rates and percentiles cover, in milliseconds.
    pub window_ms: u64,
    /// Requests served at this node's HTTP edge and invocations it executed for others.
    pub totals: LoadTotals,
    /// What happened in the window (counts, so rates are `count / window_ms`).
    pub window: WindowCounts,
    /// Warm sandbox instances and prepared modules held now.
    pub warm_instances: u64,
    /// Memory those instances reserve, in bytes.
    pub warm_memory_bytes: u64,
    /// Invocations in flight now.
    pub in_flight: u64,
    /// The node's own concurrency limit (execution slots).
    pub concurrency_limit: u64,
    /// Invocations waiting for a slot now.
    pub queue_depth: u64,
    /// Entries in the dead-letter queue (regions; zero at POPs).
    pub dlq_depth: u64,
    /// Forwards since start, by reason (`rare`, `over-capacity`, ...).
    pub forwards_by_reason: Vec<(String, u64)>,
    /// Per tenant, the tenants with anything in flight or served recently.
    pub tenants: Vec<TenantLoad>,
    /// The busiest functions, bounded (see `NodeStats`).
    pub functions: Vec<FunctionLoad>,
    /// Outcomes per function version run here since the previous report (bounded, see
    /// `NodeStats::outcome`): what the region judges runtime canaries and alias rollouts
    /// on for edge traffic.
    #[serde(default)]
    pub outcomes: Vec<VersionOutcomes>,
}

/// Outcomes of one version of a function run at a node over one report window. Only
/// invocations that ran (a guest was started) are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionOutcomes {
    /// The function.
    pub function: super::FunctionKey,
    /// The version that ran: its number, or `$LATEST`.
    pub version: String,
    /// The runtime release the runtime canary sampled for these invocations (an undecided,
    /// unpinned function); `None` when the release was decided or pinned, so these do not
    /// count in the canary.
    pub canary_release: Option<String>,
    /// Invocations.
    pub invocations: u32,
    /// Of which ended with a function error (non-zero exit, trap, out of memory or time).
    pub errors: u32,
    /// Of which failed for the platform's fault (what the runtime canary counts).
    pub platform_failures: u32,
    /// Peak linear memory of some of these invocations, in bytes (at most
    /// `metrics::MAX_REPORTED_PEAKS`, spread over the window), for the region's
    /// right-size recommendation.
    #[serde(default)]
    pub peak_bytes: Vec<u64>,
}

/// Counts over one report window. Integers, so reports compare exactly and encode
/// compactly; rates are derived by whoever displays them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowCounts {
    /// Requests at this node's edge that ran here.
    pub local: u64,
    /// Requests at this node's edge that were forwarded.
    pub forwarded: u64,
    /// Cold starts of invocations executed here.
    pub cold_starts: u64,
    /// Median end-to-end latency at the edge, in microseconds (0 when idle).
    pub latency_p50_us: u64,
    /// 99th percentile of the same.
    pub latency_p99_us: u64,
}

/// Cumulative counters of a node since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadTotals {
    /// Invocations this node executed.
    pub executed: u64,
    /// Of those, cold starts.
    pub cold_starts: u64,
    /// Requests this node forwarded to a region.
    pub forwarded: u64,
    /// Executions that failed (guest error or platform refusal).
    pub failed: u64,
}

/// One tenant's concurrency at a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TenantLoad {
    /// The tenant.
    pub tenant: String,
    /// Its invocations in flight at this node now.
    pub in_flight: u64,
    /// The highest in-flight count seen in the window.
    pub peak_in_flight: u64,
    /// Its concurrency limit at this node, when one applies.
    pub limit: Option<u64>,
}

/// One function's activity at a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FunctionLoad {
    /// `tenant/name`.
    pub function: String,
    /// Executions here since start.
    pub executed: u64,
    /// Forwards from here since start.
    pub forwarded: u64,
    /// Cold starts here since start.
    pub cold_starts: u64,
    /// Requests in the window (executed + forwarded).
    pub in_window: u64,
}
