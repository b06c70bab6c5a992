//! An HTTP/3 client over `h3` + `h3-quinn`: what the integration tests speak HTTP/3 with,
//! and the benchmark's HTTP/3 load generator (Debian's `h2load` is built without HTTP/3,
//! so this takes its place for the HTTP/3 rows, with the same body and token as `wrk`).
//!
//! Trusts one CA (the dev CA's PEM) and offers ALPN `h3`. Each [`H3Client`] owns its
//! QUIC connection and the task driving the HTTP/3 connection; dropping it closes both.

use super::wrk::{BODY_BYTES, LoadResult};
use anyhow::{Context as _, bail};
use bytes::{Buf, Bytes};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The h3 request sender over quinn.
pub type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// A TLS 1.3 client configuration trusting only the CA in `ca_pem` (a PEM file), offering
/// ALPN `alpn`.
///
/// # Errors
/// When the CA cannot be read or the TLS configuration cannot be built.
pub fn tls13_config(ca_pem: &Path, alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).context("reading the CA")? {
        roots.add(cert.context("parsing the CA")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// A client QUIC configuration from `tls` (which must offer ALPN `h3`).
///
/// # Errors
/// When `tls` cannot start a QUIC handshake (no TLS 1.3 suite).
pub fn quic_config(tls: rustls::ClientConfig) -> anyhow::Result<quinn::ClientConfig> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// A client QUIC configuration trusting the CA in `ca_pem` (a PEM file), ALPN `h3`.
///
/// # Errors
/// When the CA cannot be read or the TLS configuration cannot be built.
pub fn client_config(ca_pem: &Path) -> anyhow::Result<quinn::ClientConfig> {
    quic_config(tls13_config(ca_pem, b"h3")?)
}

/// A client-side QUIC endpoint on an ephemeral loopback port. Must be called inside a
/// tokio runtime.
///
/// # Errors
/// When the UDP socket cannot be bound.
pub fn endpoint(config: quinn::ClientConfig) -> anyhow::Result<quinn::Endpoint> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// One HTTP/3 connection.
pub struct H3Client {
    /// The QUIC connection underneath (tests open raw streams on it).
    pub quic: quinn::Connection,
    /// Sends requests on the connection; cheap to clone.
    pub sender: Sender,
    driver: tokio::task::JoinHandle<()>,
    _endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client")
            .field("remote", &self.quic.remote_address())
            .finish_non_exhaustive()
    }
}

impl Drop for H3Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl H3Client {
    /// Connects to `addr` naming `server_name` (SNI) and sets up HTTP/3.
    ///
    /// # Errors
    /// The QUIC connection error (a refused connection is
    /// `quinn::ConnectionError::ConnectionClosed` with `CONNECTION_REFUSED`) or the HTTP/3
    /// set-up error.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
    ) -> anyhow::Result<Self> {
        let quic = endpoint.connect(addr, server_name)?.await?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .context("HTTP/3 set-up")?;
        let driver = tokio::spawn(async move {
            let _closed = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self {
            quic,
            sender,
            driver,
            _endpoint: endpoint.clone(),
        })
    }

    /// Sends `req` with `body` and reads the whole answer.
    ///
    /// # Errors
    /// When the stream or connection fails.
    pub async fn send(
        &self,
        req: http::Request<()>,
        body: Bytes,
    ) -> anyhow::Result<(http::Response<()>, Bytes)> {
        send(&mut self.sender.clone(), req, body).await
    }
}

/// Sends `req` with `body` on `sender` and reads the whole answer.
///
/// # Errors
/// When the stream or connection fails.
pub async fn send(
    sender: &mut Sender,
    req: http::Request<()>,
    body: Bytes,
) -> anyhow::Result<(http::Response<()>, Bytes)> {
    let mut stream = sender.send_request(req).await?;
    if !body.is_empty() {
        stream.send_data(body).await?;
    }
    stream.finish().await?;
    let resp = stream.recv_response().await?;
    let mut got = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        let n = chunk.remaining();
        got.extend_from_slice(&chunk.copy_to_bytes(n));
    }
    Ok((resp, Bytes::from(got)))
}

/// A POST of the benchmark body to `url` with `token`.
///
/// # Errors
/// When `url` is not a valid URI.
pub fn post(url: &str, token: &str) -> anyhow::Result<http::Request<()>> {
    Ok(http::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", BODY_BYTES)
        .body(())?)
}

/// Drives `url` (at `addr`, SNI `localhost`) over HTTP/3 from `connections` connections,
/// each sending the benchmark body with `token` one request at a time, for `duration`.
///
/// # Errors
/// When a connection cannot be set up.
pub async fn load(
    config: &quinn::ClientConfig,
    addr: SocketAddr,
    url: &str,
    token: &str,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let endpoint = endpoint(config.clone())?;
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(H3Client::connect(&endpoint, addr, "localhost").await?);
    }
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    let until = Instant::now() + duration;
    let mut workers = tokio::task::JoinSet::new();
    for client in &clients {
        let (mut sender, body) = (client.sender.clone(), body.clone());
        let req = post(url, token)?;
        workers.spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(anyhow::Error::from)?;
            let mut errors = 0u64;
            while Instant::now() < until {
                let started = Instant::now();
                match send(&mut sender, clone_head(&req), body.clone()).await {
                    Ok((resp, _)) if resp.status().is_success() => {
                        hist.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(0))?;
                    }
                    _ => errors += 1,
                }
            }
            anyhow::Ok((hist, errors))
        });
    }
    let started = Instant::now();
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut errors = 0;
    while let Some(done) = workers.join_next().await {
        let (h, e) = done??;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    if hist.is_empty() {
        bail!("no HTTP/3 request to {url} succeeded ({errors} failed)");
    }
    Ok(LoadResult {
        requests_per_sec: hist.len() as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        requests: hist.len(),
        errors,
        server_cpu_us: None,
    })
}

/// A copy of a body-less request's head.
pub fn clone_head(req: &http::Request<()>) -> http::Request<()> {
    let mut copy = http::Request::new(());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    copy
}
