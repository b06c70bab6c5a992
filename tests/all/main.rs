//! Cross-node integration tests: real region and POP nodes on loopback, real QUIC with
//! mutual TLS, real HTTP, a real DNS server. One binary, a module per topic.

mod abuse;
mod canary;
mod capacity_edge;
mod certs;
mod cli;
mod components;
mod control;
mod discovery;
mod dns;
mod event_crash;
mod events;
mod failover;
mod faults;
mod fleets;
mod gate;
mod http3;
mod https;
mod jetstream;
mod leases;
mod limits;
mod logs;
mod observability;
mod openapi;
mod origin;
mod pop_dns;
mod region_death;
mod resize;
mod rollout;
mod routes;
mod sandbox;
mod spill;
mod state;
mod support;
mod throttled;
mod two_tier;
