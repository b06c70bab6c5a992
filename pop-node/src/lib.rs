//! The Strata POP node: the edge tier close to devices.
//!
//! - [`config`]: the node's configuration (TOML + flags).
//! - [`node`]: start and stop; [`node::start`] returns the bound address and a handle.
//! - [`discovery`]: finding regions (static list or DNS SRV/A with TTL).
//! - [`upstream`]: the QUIC link to regions: connect, reconnect, forward, fetch.
//! - [`known`]: tokens and functions pushed by the region or learned from its replies.
//! - [`sync`]: the push stream: subscribe, catch up from a revision, apply, prepare.
//! - [`prefetch`]: background artifact fetch + compile for popular functions.
//! - [`invoker`]: placement decision, then local execution or forwarding.

pub mod config;
pub mod discovery;
pub mod invoker;
pub mod known;
pub mod node;
pub mod prefetch;
pub mod sync;
pub mod upstream;

pub use config::PopConfig;
pub use node::{PopHandle, StartError, start};
pub use sync::SyncStatus;
