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
    /// Requests measured (in all rounds).
    pub requests: u64,
    /// Sizes of the consecutive rounds the measured requests are sent in, on the same
    /// connections without a pause (each round's samples and wall time kept apart, see
    /// [`LoadOutcome::rounds`]); empty for one round of `requests`. When not empty they
    /// sum to `requests` ([`generator::GenerateError::Rounds`] otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<u64>,
    /// Connections, each with one request in flight (closed loop).
    pub concurrency: usize,
    /// The whole run (warm-up included) stops sending at this bound; the outcome then has
    /// fewer samples than `requests`.
    pub within: Duration,
}

impl LoadSpec {
    /// The sizes of the rounds the measured requests are sent in: [`LoadSpec::rounds`],
    /// or one round of [`LoadSpec::requests`].
    pub fn round_sizes(&self) -> Vec<u64> {
        if self.rounds.is_empty() {
            vec![self.requests]
        } else {
            self.rounds.clone()
        }
    }
}

/// One round of a run: how many of its requests were measured and how long they took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundOutcome {
    /// Measured requests of the round (fewer than asked when the run's bound passed).
    pub sent: usize,
    /// Wall time of the round.
    pub wall: Duration,
}

/// What one `strata-load` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadOutcome {
    /// One per measured request, round after round, in completion order per connection
    /// within a round.
    pub(crate) samples: Vec<Sample>,
    /// Wall time of the measured requests (warm-up excluded).
    pub wall: Duration,
    /// The rounds in the order sent ([`LoadSpec::round_sizes`]): the first `sent` samples
    /// are the first round's, and so on.
    pub rounds: Vec<RoundOutcome>,
    /// The generator's process id (not this process's when it ran in `strata-load`).
    pub pid: u32,
}

impl LoadOutcome {
    /// Measured requests.
    pub fn sent(&self) -> u64 {
        self.samples.len() as u64
    }

    /// Each round's samples and wall time, in the order sent.
    pub(crate) fn round_samples(&self) -> impl Iterator<Item = (&[Sample], Duration)> {
        let mut rest = self.samples.as_slice();
        self.rounds.iter().map(move |r| {
            let (round, next) = rest.split_at(r.sent.min(rest.len()));
            rest = next;
            (round, r.wall)
        })
    }

    /// Measured requests that did not answer 200 from the expected tier with the payload.
    pub fn errors(&self) -> u64 {
        self.samples.iter().filter(|s| !s.ok).count() as u64
    }
}
