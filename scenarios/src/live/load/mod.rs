//! The HTTP load of the paths comparison (`run --live`) and of `calibrate`, sent from its
//! own process, as `scenarios bench` sends its load from `wrk`.
//!
//! Both nodes, the delay proxy and this process's runtime share a 2-vCPU machine; with the
//! client in the same process and runtime as the nodes, a sub-millisecond POP-local path
//! moved 0.32-0.67 ms at p50 between consecutive runs (docs/performance.md, issue 20). So
//! the load comes from `strata-load` (scenarios/src/bin/strata-load.rs), a closed loop of
//! HTTP/1.1 connections on a current-thread runtime:
//!
//! - [`LoadSpec`] is what it is asked (JSON on its stdin): URL, token, the tier that must
//!   answer, warm-up and measured request counts, connections, a time bound;
//! - [`generator::generate`] is the loop it runs (in that process, never in the nodes');
//! - [`LoadOutcome`] is what it answers (JSON on its stdout): every measured request's
//!   latency, verdict and `server-timing`;
//! - [`process::Loadgen`] finds the binary beside the running one, starts it, and reads
//!   the outcome back. There is no in-process fallback: a missing binary is an error.

pub mod generator;
pub mod process;

pub use process::{Loadgen, LoadgenError};

use super::Sample;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What one `strata-load` run sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// The invoke URL, `http://host:port/v1/functions/NAME/invoke`.
    pub url: String,
    /// Bearer token of every request.
    pub token: String,
    /// Prefix `x-strata-executed-at` must start with (`pop/`, `region/`): a request
    /// answered by another tier counts as an error.
    pub expect: String,
    /// Requests sent first on the same connections and not measured (connections, the
    /// first instances of the pool).
    pub warmup: u64,
    /// Requests measured.
    pub requests: u64,
    /// Connections, each with one request in flight (closed loop).
    pub concurrency: usize,
    /// The whole run (warm-up included) stops sending at this bound; the outcome then has
    /// fewer samples than `requests`.
    pub within: Duration,
}

/// What one `strata-load` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadOutcome {
    /// One per measured request, in completion order per connection.
    pub(crate) samples: Vec<Sample>,
    /// Wall time of the measured requests (warm-up excluded).
    pub wall: Duration,
    /// The generator's process id (not this process's when it ran in `strata-load`).
    pub pid: u32,
}

impl LoadOutcome {
    /// Measured requests.
    pub fn sent(&self) -> u64 {
        self.samples.len() as u64
    }

    /// Measured requests that did not answer 200 from the expected tier with the payload.
    pub fn errors(&self) -> u64 {
        self.samples.iter().filter(|s| !s.ok).count() as u64
    }
}
