//! Strata's library shared by both tiers.
//!
//! Table of contents, one owner per concern:
//! - [`model`]: tenants, function names, versions, config, digests, invocation types and
//!   the platform error type. Plain data; never performs I/O.
//! - [`wire`]: the POP<->region protocol: messages, length-prefixed bincode frames, ALPN,
//!   size limits. The only module that knows the byte format.
//! - [`sandbox`]: the wasmtime engine, module validation, guest ABIs and limits. The only
//!   module that imports wasmtime.
//! - [`policy`]: sans-IO decision logic driven with an injected `now`; never sleeps,
//!   spawns or does I/O.
//! - [`transport`]: quinn endpoints with mutual TLS and the dev CA. The only module that
//!   touches quinn and rustls.
//! - [`exec`]: running a resolved function on the blocking pool with a module cache;
//!   shared by both tiers, admission stays with each node.
//! - [`metrics`]: Prometheus metrics and the per-second load a node reports to its
//!   region; bounded, never performs I/O.
//! - [`logs`]: function logs (guest stderr) in bounded per-function ring buffers.
//! - [`telemetry`]: logging set-up for the binaries.
//! - [`edge`]: the device-facing HTTP edge shared by POP and region: the invoke handler
//!   and the one mapping from error kind to status code.

pub mod edge;
pub mod exec;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod sandbox;
pub mod telemetry;
pub mod transport;
pub mod warm_loop;
pub mod wire;
