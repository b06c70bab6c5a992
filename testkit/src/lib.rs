//! Strata's test kit: real nodes on loopback for the CLI's `strata dev`, the integration
//! tests and the live scenario runs.
//!
//! - [`cluster`]: one region and one POP in this process sharing a dev CA, with a `dev`
//!   tenant and its token; deploys go through the region's HTTP control API.
//! - [`proxy`]: a UDP delay proxy between a POP and its region's QUIC port (WAN latency,
//!   a cut link).

pub mod cluster;
pub mod proxy;

/// A response header's value, empty when absent or not text.
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
