//! Strata's runtime library shared by both tiers.
//!
//! The sans-IO half (model, wire format, policies, clock) is the `strata_core` crate,
//! re-exported here so `common::model`, `common::policy` and `common::wire` keep naming
//! it; this crate adds what needs a runtime.
//!
//! Table of contents, one owner per concern:
//! - [`model`], [`policy`], [`clock`]: re-exported from `strata_core`.
//! - [`wire`]: the core's wire format (re-exported) plus reading and writing whole frames
//!   on async streams.
//! - [`artifact_encoding`]: precompiled code compressed for the POP-region wire, and its
//!   bounded decoding.
//! - [`sandbox`]: the wasmtime engine, module validation, guest ABIs and limits. The only
//!   module that imports wasmtime.
//! - [`transport`]: quinn endpoints with mutual TLS and the dev CA. The only module that
//!   touches quinn and rustls.
//! - [`exec`]: running a resolved function on the runtime's workers with a module cache;
//!   shared by both tiers, admission stays with each node.
//! - [`metrics`]: Prometheus metrics and the per-second load a node reports to its
//!   region; bounded, never performs I/O.
//! - [`sharded`]: state split into independently locked shards, so the per-request path
//!   takes no node-wide lock.
//! - [`logs`]: function logs (guest stderr) in bounded per-function ring buffers.
//! - [`telemetry`]: logging set-up for the binaries.
//! - [`edge`]: the device-facing HTTP edge shared by POP and region: the invoke handler
//!   and the one mapping from error kind to status code.

pub use strata_core::{clock, model, policy};

pub mod artifact_encoding;
pub mod edge;
pub mod exec;
pub mod logs;
pub mod metrics;
pub mod sandbox;
pub mod sharded;
pub mod telemetry;
pub mod transport;
pub mod warm_loop;
pub mod wire;
