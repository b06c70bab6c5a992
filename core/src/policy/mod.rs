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
pub mod recency;
pub mod region;
pub mod resize;
pub mod retry;
pub mod rollout;
pub mod share;
pub mod split;
pub mod trending;
pub mod version;
pub mod warm;

pub use keepalive::{HistogramConfig, HistogramPolicy, KeepAliveWindows, WindowBasis};
pub use placement::{Decision, ForwardReason, LocalState, PlacementConfig, PlacementPolicy};
pub use recency::RecencyTable;
pub use trending::{TrendingConfig, TrendingPolicy};
pub use warm::{Arrivals, WarmConfig, WarmMode, WarmPolicy};
