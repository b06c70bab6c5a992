//! Strata's sans-IO core, shared by the nodes and the simulator.
//!
//! Table of contents, one owner per concern:
//! - [`model`]: tenants, function names, versions, config, digests, invocation types and
//!   the platform error type. Plain data; never performs I/O.
//! - [`wire`]: the POP<->region protocol: messages, length-prefixed bincode frames, ALPN,
//!   size limits. The only module that knows the byte format; never reads a stream.
//! - [`policy`]: every decision rule, driven with an injected `now`; never sleeps, spawns
//!   or does I/O.
//! - [`clock`]: the [`clock::Clock`] the I/O shells read `now` from.
//!
//! No async runtime, socket, HTTP server or wasm engine is in this crate's dependency tree
//! (`.ci/core-deps` checks it), so "no I/O in policy" is enforced by the compiler rather
//! than by convention. The runtime half (sandbox, transport, HTTP edge, async framing) is
//! the `common` crate.

pub mod clock;
pub mod model;
pub mod policy;
pub mod wire;
