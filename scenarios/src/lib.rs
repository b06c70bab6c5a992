//! Strata latency scenarios.
//!
//! - [`live`]: drive real nodes (a region and a POP on loopback, in this process) with a
//!   bounded number of requests and report throughput and latency percentiles per path.

pub mod live;
