//! Cross-node integration tests: real region and POP nodes on loopback, real QUIC with
//! mutual TLS, real HTTP, a real DNS server. One binary, a module per topic.

mod cli;
mod control;
mod discovery;
mod dns;
mod faults;
mod limits;
mod logs;
mod observability;
mod openapi;
mod pop_dns;
mod routes;
mod sandbox;
mod support;
mod two_tier;
