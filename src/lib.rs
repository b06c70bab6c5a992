//! The `strata` package's library: what the CLI, the integration tests and tooling share.
//!
//! - [`client`]: the HTTP client side of the control and invoke APIs, and `dev.json`.
//! - [`dev`]: a whole deployment (one region + one POP) in this process, on loopback.

pub mod client;
pub mod dev;
