//! Strata's simulator, its own crate so that its dependency tree is the core's plus a few
//! pure crates (no async runtime, sockets, HTTP stack or wasm engine: `.ci/core-deps`
//! checks it): it runs the same `strata_core::policy` planners the nodes run.
//!
//! - [`scenario`]: the scenario file format (TOML), parsed and validated once, and the
//!   cost model file a scenario may load.
//! - [`sim`]: the discrete-event simulator over `strata_core::policy`.
//! - [`keepalive`]: keep-alive policies on an Azure Functions-shaped workload.
//!
//! The `scenarios` crate adds reports, live runs against real nodes, benches, fault runs
//! and the CLI on top.

pub mod keepalive;
pub mod scenario;
pub mod sim;
