//! The POP's device-facing HTTPS listeners: builds the SNI certificate table from the
//! `[https]` configuration, binds the TCP listener (HTTP/1.1 and HTTP/2 by ALPN, see
//! [`common::edge::tls`]) and, with `h3_listen`, the UDP one (HTTP/3, see
//! [`common::edge::http3`]), and serves the same router as the plain listener over both.
//! TCP responses advertise HTTP/3 with `alt-svc` when it is on. Tenant certificates
//! pushed by the region enter the same table through [`TenantCerts`], so they serve all
//! three protocols.

use crate::config::HttpsConfig;
use axum::Router;
use common::edge::http3::{self, Http3Error, QuicLimits};
use common::edge::tls::{
    CertError, CertTable, certified_key, certified_key_from_files, https_server_config,
};
use common::edge::{HttpLimits, serve_tls};
use common::wire::PushedCertificate;
use http::HeaderValue;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;

/// Why the HTTPS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// A configured certificate was not accepted.
    #[error("certificate for {host}: {source}")]
    Cert {
        /// The host (or `default`) it was configured for.
        host: String,
        /// What is wrong with it.
        source: CertError,
    },
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The listener could not be bound.
    #[error("binding the HTTPS listener: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP/3 listener could not be set up.
    #[error("{0}")]
    Http3(#[from] Http3Error),
    /// `plain_http = false` without `[https]`: devices could not reach the node at all.
    #[error("plain_http = false needs an [https] listener")]
    NoListener,
}

/// Bound HTTPS listeners, ready to serve.
#[derive(Debug)]
pub struct Https {
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    h3: Option<quinn::Endpoint>,
    /// Where devices connect with TLS.
    pub addr: SocketAddr,
    /// Where devices connect with HTTP/3 (UDP), if it is on.
    pub h3_addr: Option<SocketAddr>,
    /// The certificates it serves; updates apply to the next handshake.
    pub certs: Arc<CertTable>,
}

impl Https {
    /// Loads the configured certificates and binds the listeners.
    ///
    /// # Errors
    /// [`HttpsError`] naming the certificate or address that failed.
    pub async fn bind(
        config: &HttpsConfig,
        backlog: u32,
        limits: &HttpLimits,
    ) -> Result<Self, HttpsError> {
        let certs = Arc::new(CertTable::new());
        if let Some(files) = &config.default_certificate {
            let key = certified_key_from_files(&files.cert, &files.key).map_err(|source| {
                HttpsError::Cert {
                    host: "default".into(),
                    source,
                }
            })?;
            certs.set_default(Some(key));
        }
        for entry in &config.certificates {
            let key = certified_key_from_files(&entry.cert, &entry.key).map_err(|source| {
                HttpsError::Cert {
                    host: entry.host.clone(),
                    source,
                }
            })?;
            certs.insert(&entry.host, key);
        }
        let tls = Arc::new(https_server_config(Arc::clone(&certs))?);
        let listener = common::edge::listener::bind(config.listen, backlog)?;
        let addr = listener.local_addr()?;
        let h3 = match config.h3_listen {
            Some(at) => Some(http3::bind(
                at,
                Arc::clone(&certs),
                limits,
                QuicLimits {
                    max_streams: config.h3_max_streams,
                },
            )?),
            None => None,
        };
        let h3_addr = h3.as_ref().map(quinn::Endpoint::local_addr).transpose()?;
        Ok(Self {
            listener,
            config: tls,
            h3,
            addr,
            h3_addr,
            certs,
        })
    }

    /// The `alt-svc` value advertising the HTTP/3 listener, if it is on: same host, its
    /// UDP port, remembered by clients for a day.
    pub fn alt_svc(&self) -> Option<HeaderValue> {
        let port = self.h3_addr?.port();
        HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
    }

    /// Serves `router` on the listeners, within `limits` (as the plain listener), until
    /// the task is dropped.
    pub async fn serve(self, router: Router, limits: HttpLimits) {
        let alt_svc = self.alt_svc();
        let acceptor = common::edge::tls::TlsAcceptor::from(self.config);
        let tcp_router = match alt_svc {
            // Devices that came over TCP learn where HTTP/3 is (RFC 7838); only TLS
            // origins may use it, so the plain listener does not advertise it.
            Some(value) => router.clone().layer(SetResponseHeaderLayer::if_not_present(
                http::header::ALT_SVC,
                value,
            )),
            None => router.clone(),
        };
        let tcp = serve_tls(
            self.listener,
            acceptor,
            tcp_router,
            limits,
            std::future::pending(),
        );
        match self.h3 {
            Some(endpoint) => {
                let quic = http3::serve_h3(endpoint, router, limits, std::future::pending());
                tokio::join!(tcp, quic);
            }
            None => tcp.await,
        }
    }
}

/// The tenant certificates the region pushed, installed into the listener's [`CertTable`]
/// as they arrive: a new or rotated certificate is served from the next handshake, a
/// deleted one no more, and one past its `not_after` is skipped by the table (the
/// handshake falls through to a wildcard or the node's default). A tenant certificate
/// for a host the `[https]` configuration also names replaces the configured one.
#[derive(Debug)]
pub struct TenantCerts {
    table: Arc<CertTable>,
    /// Hosts whose certificate came from the region, so a snapshot can forget them.
    pushed: Mutex<HashSet<String>>,
}

impl TenantCerts {
    /// Installs into `table`.
    pub fn new(table: Arc<CertTable>) -> Self {
        Self {
            table,
            pushed: Mutex::new(HashSet::new()),
        }
    }

    fn pushed(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs `certificate` for `host`, or removes the host's pushed certificate for
    /// `None`. A certificate rustls refuses (the region checked it, so not expected) is
    /// removed rather than left stale, with a warning naming the host only.
    pub fn apply(&self, host: &str, certificate: Option<PushedCertificate>) {
        let Some(c) = certificate else {
            self.table.remove(host);
            self.pushed().remove(host);
            return;
        };
        match certified_key(c.chain_pem.as_bytes(), c.key_pem.as_bytes()) {
            Ok(key) => {
                let not_after = u64::try_from(c.not_after)
                    .ok()
                    .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
                // A `not_after` before the epoch is already expired: serve it never.
                self.table
                    .insert_until(host, key, Some(not_after.unwrap_or(UNIX_EPOCH)));
                self.pushed().insert(host.to_owned());
                tracing::debug!(%host, tenant = %c.tenant, "tenant certificate installed");
            }
            Err(e) => {
                tracing::warn!(%host, error = %e, "pushed certificate refused; not serving one for this host");
                self.table.remove(host);
                self.pushed().remove(host);
            }
        }
    }

    /// Forgets every pushed certificate (a snapshot follows with the whole state).
    pub fn clear(&self) {
        for host in self.pushed().drain() {
            self.table.remove(&host);
        }
    }
}
