//! The added cost of a new connection at the POP, one at a time: a TCP connect alone, a
//! TCP connect plus a full TLS 1.3 handshake (the HTTPS listener), and a full QUIC 1-RTT
//! handshake (the HTTP/3 listener). Session resumption is off in the client, so every
//! handshake is a full one (certificate sent and verified); 0-RTT is off at the POP (see
//! `common::edge::http3`), so there is no 0-RTT row.

use rustls::pki_types::ServerName;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Median times of `samples` sequential connection set-ups, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HandshakeResult {
    /// Set-ups measured per kind.
    pub samples: u32,
    /// TCP connect.
    pub tcp_us: f64,
    /// TCP connect plus TLS 1.3 handshake.
    pub tls13_us: f64,
    /// QUIC 1-RTT handshake (TLS 1.3 inside QUIC).
    pub quic_us: f64,
}

fn tls13(ca_pem: &Path, alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let mut tls = super::h3::tls13_config(ca_pem, alpn)?;
    tls.resumption = rustls::client::Resumption::disabled();
    Ok(tls)
}

fn median(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0) as f64
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Measures `samples` set-ups of each kind against the POP's HTTPS listener `https` and
/// HTTP/3 listener `h3`, trusting the CA in `ca_pem` and naming `localhost`.
///
/// # Errors
/// When a connection or handshake fails.
pub async fn measure(
    https: SocketAddr,
    h3: SocketAddr,
    ca_pem: &Path,
    samples: u32,
) -> anyhow::Result<HandshakeResult> {
    let name = ServerName::try_from("localhost")?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls13(ca_pem, b"http/1.1")?));
    let endpoint = super::h3::endpoint(super::h3::quic_config(tls13(ca_pem, b"h3")?)?)?;
    let (mut tcp, mut tls, mut quic) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples.max(1) {
        let started = Instant::now();
        let s = tokio::net::TcpStream::connect(https).await?;
        tcp.push(micros(started));
        drop(s);

        let started = Instant::now();
        let s = tokio::net::TcpStream::connect(https).await?;
        s.set_nodelay(true)?;
        let done = connector.connect(name.clone(), s).await?;
        tls.push(micros(started));
        drop(done);

        let started = Instant::now();
        let conn = endpoint.connect(h3, "localhost")?.await?;
        quic.push(micros(started));
        conn.close(0u32.into(), b"measured");
    }
    endpoint.wait_idle().await;
    Ok(HandshakeResult {
        samples: samples.max(1),
        tcp_us: median(tcp),
        tls13_us: median(tls),
        quic_us: median(quic),
    })
}
