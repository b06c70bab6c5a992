//! Sans-IO decision logic shared by the nodes and the simulator.
//!
//! Every policy is a plain struct driven by events that carry an injected `now` and
//! returning decisions. Nothing here sleeps, spawns, reads a clock, draws unseeded random
//! numbers or performs I/O, so a policy bug is reproduced in a unit test without a socket.

pub mod affinity;
pub mod alias;
pub mod canary;
pub mod concurrency;
pub mod hold;
pub mod liveness;
pub mod placement;
pub mod rate;
pub mod region;
pub mod resize;
pub mod retry;
pub mod share;
pub mod trending;
pub mod warm;

pub use placement::{Decision, ForwardReason, LocalState, PlacementConfig, PlacementPolicy};
pub use trending::{TrendingConfig, TrendingPolicy};
pub use warm::{WarmConfig, WarmMode, WarmPolicy};
