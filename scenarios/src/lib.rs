//! Strata latency scenarios.
//!
//! - [`scenario`]: the scenario file format (TOML), parsed and validated once.
//! - [`sim`]: the discrete-event simulator over `common::policy`.
//! - [`keepalive`]: keep-alive policies on an Azure Functions-shaped workload.
//! - [`report`]: `report.json`, `report.md` and plots of a run.
//! - [`run`]: `run FILE.toml`: simulate, report, and with `--live` compare with real nodes.
//! - [`live`]: drive real nodes (a region and a POP on loopback, in this process, started
//!   by `testkit::cluster`, shared with `strata dev` and the tests).
//! - [`bench`]: `bench`: the DESIGN §7 HTTP budgets, each server its own process, `wrk`.
//! - [`fault`]: fault runs against the node binaries as separate processes.

pub mod bench;
pub mod fault;
pub mod keepalive;
pub mod live;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sim;
