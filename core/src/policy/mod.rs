//! Sans-IO decision logic shared by the nodes and the simulator.
//!
//! Every policy is a plain struct driven by events that carry an injected `now` and
//! returning decisions. Nothing here sleeps, spawns, reads a clock, draws unseeded random
//! numbers or performs I/O, so a policy bug is reproduced in a unit test without a socket.

pub mod affinity;
pub mod alias;
pub mod canary;
pub mod concurrency;
pub mod edge;
pub mod failover;
pub mod hold;
pub mod keepalive;
pub mod lease;
pub mod liveness;
pub mod origin;
pub mod outbound;
pub mod placement;
pub mod rate;
pub mod region;
pub mod resize;
pub mod retry;
pub mod rollout;
pub mod share;
pub mod split;
pub mod trending;
pub mod version;
pub mod warm;

/// Makes room for one more key in a table bounded by `max`: when `key` is new and the
/// table full, drops the entry least recently `seen` (ties by key, so the choice is
/// deterministic).
pub(crate) fn evict_least_recent<K, V, S>(
    table: &mut std::collections::HashMap<K, V, S>,
    key: &K,
    max: usize,
    seen: impl Fn(&V) -> std::time::Instant,
) where
    K: Eq + std::hash::Hash + Ord + Clone,
    S: std::hash::BuildHasher,
{
    if table.contains_key(key) || table.len() < max.max(1) {
        return;
    }
    let oldest = table
        .iter()
        .min_by(|a, b| seen(a.1).cmp(&seen(b.1)).then_with(|| a.0.cmp(b.0)))
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        table.remove(&k);
    }
}

pub use keepalive::{HistogramConfig, HistogramPolicy, KeepAliveWindows, WindowBasis};
pub use placement::{Decision, ForwardReason, LocalState, PlacementConfig, PlacementPolicy};
pub use trending::{TrendingConfig, TrendingPolicy};
pub use warm::{WarmConfig, WarmMode, WarmPolicy};
