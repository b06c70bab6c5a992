//! Strata latency scenarios.
//!
//! - [`scenario`], [`sim`], [`keepalive`]: the scenario file format, the discrete-event
//!   simulator and the keep-alive comparison, from the `strata-sim` crate (re-exported).
//! - [`report`]: `report.json`, `report.md` and plots of a run.
//! - [`run`]: `run FILE.toml`: simulate, report, and with `--live` compare with real nodes.
//! - [`live`]: drive real nodes (a region and a POP on loopback, in this process, started
//!   by `testkit::cluster`, shared with `strata dev` and the tests); the paths
//!   comparison's and the calibration's load from `strata-load`, its own process.
//! - [`bench`]: `bench`: the DESIGN §7 HTTP budgets, each server its own process, `wrk`.
//! - [`fault`]: fault runs against the node binaries as separate processes.

pub mod bench;
pub mod fault;
pub mod live;
pub mod report;
pub mod run;

pub use strata_sim::{keepalive, scenario, sim};

#[cfg(test)]
mod keepalive_tests;
#[cfg(test)]
mod sim_tests;
