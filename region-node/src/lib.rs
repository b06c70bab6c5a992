//! The Strata region node: the origin tier.
//!
//! - [`config`]: the node's configuration (TOML + flags).
//! - [`node`]: start and stop; [`node::start`] returns bound addresses and a handle
//!   ([`node::start_with_clocks`] gives it clocks a test moves by hand).
//! - [`store`]: durable state (key-value with revisions + watch, blobs, streams) on redb
//!   or NATS JetStream.
//! - [`registry`]: tenants, tokens, functions, versions and aliases over the store.
//! - [`routes`]: tenant-owned HTTP routes and the route table.
//! - [`certs`]: tenant TLS certificates for hosts they own, pushed to POPs.
//! - [`region`]: the region's services, built once and shared ([`region::Region`]).
//! - [`invoke`]: the invoke pipeline: auth -> resolve -> release -> admit -> execute.
//! - [`admission`]: execution slots with a bounded queue.
//! - [`quic`]: the service POPs talk to over QUIC.
//! - [`push`]: the long-lived stream that pushes registry changes to POPs.
//! - [`api`]: the control API.
//! - [`capacity`]: the capacity view of this region and its POPs (`/v1/capacity`,
//!   `/dashboard`).
//! - [`artifacts`]: precompiling on deploy and serving artifacts to POPs.
//! - [`events`]: the durable async queue, retries, dead-letter queue, control functions.
//! - [`canary`]: the runtime canary: release choice, verdicts, owner notifications.
//! - [`quota`]: per-tenant quotas (`[quotas]`) and their checks.
//! - [`state`]: shared state of functions with a resource group, over the store.
//! - [`trend`]: trending hints: aggregate rates from POP reports, pushed to POPs.

pub mod admission;
pub mod api;
pub mod artifacts;
pub mod canary;
pub mod capacity;
pub mod certs;
pub mod config;
pub mod events;
pub mod fleet;
pub mod hosts;
pub mod invoke;
pub mod limits;
pub mod node;
pub mod outcomes;
pub mod push;
pub mod quic;
pub mod quota;
pub mod region;
pub mod registry;
pub mod rollout;
pub mod routes;
pub mod sizes;
pub mod state;
pub mod store;
pub mod trend;

pub use config::{RegionConfig, StoreBackend, StoreConfig};
pub use node::{RegionHandle, StartError, start, start_with_clocks};
