//! The Strata POP node: the edge tier close to devices.
//!
//! - [`config`]: the node's configuration (TOML + flags).
//! - [`node`]: start and stop; [`node::start`] returns the bound address and a handle.
//! - [`discovery`]: finding regions (static list or DNS SRV/A with TTL).
//! - [`upstream`]: the QUIC link to regions: connect, reconnect, forward, fetch.
//! - [`known`]: tokens and functions pushed by the region or learned from its replies.
//! - [`sync`]: the push stream: subscribe, catch up from a revision, apply, prepare.
//! - [`prefetch`]: background artifact fetch + compile for popular functions.
//! - [`report`]: the POP's load reports to its region (capacity view).
//! - [`invoker`]: placement decision, then local execution or forwarding.
//! - [`routes`]: the route table, synced from the region.
//! - [`logship`]: function logs kept locally and shipped to the region.
//! - [`artifacts`]: the artifact cache in memory and on disk, and remembered functions.
//! - [`https`]: the device-facing HTTPS listener and its SNI certificate table.
//! - [`warm`]: trend-driven warm pools for the reactors run here.

pub mod artifacts;
pub mod config;
pub mod discovery;
pub mod https;
pub mod invoker;
pub mod known;
pub mod leases;
pub mod logship;
pub mod node;
pub mod prefetch;
pub mod report;
pub mod routes;
pub mod sync;
pub mod upstream;
pub mod warm;

pub use config::PopConfig;
pub use node::{PopHandle, StartError, start, start_with_clock};
pub use sync::SyncStatus;
