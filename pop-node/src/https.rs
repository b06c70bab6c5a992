//! The POP's device-facing HTTPS listener: builds the SNI certificate table from the
//! `[https]` configuration, binds the listener and serves the same router as the plain
//! listener over it (HTTP/1.1 and HTTP/2 by ALPN, see [`common::edge::tls`]).

use crate::config::HttpsConfig;
use axum::Router;
use common::edge::tls::{CertError, CertTable, certified_key_from_files, https_server_config};
use common::edge::{HttpLimits, serve_tls};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

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
    /// `plain_http = false` without `[https]`: devices could not reach the node at all.
    #[error("plain_http = false needs an [https] listener")]
    NoListener,
}

/// A bound HTTPS listener, ready to serve.
#[derive(Debug)]
pub struct Https {
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    /// Where devices connect with TLS.
    pub addr: SocketAddr,
    /// The certificates it serves; updates apply to the next handshake.
    pub certs: Arc<CertTable>,
}

impl Https {
    /// Loads the configured certificates and binds the listener.
    ///
    /// # Errors
    /// [`HttpsError`] naming the certificate or address that failed.
    pub async fn bind(config: &HttpsConfig, backlog: u32) -> Result<Self, HttpsError> {
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
        Ok(Self {
            listener,
            config: tls,
            addr,
            certs,
        })
    }

    /// Serves `router` on the listener, within `limits` (as the plain listener), until the
    /// task is dropped.
    pub async fn serve(self, router: Router, limits: HttpLimits) {
        let acceptor = common::edge::tls::TlsAcceptor::from(self.config);
        serve_tls(
            self.listener,
            acceptor,
            router,
            limits,
            std::future::pending(),
        )
        .await;
    }
}
