//! Certificates and keys from PEM files, turned into rustls and quinn configurations.
//!
//! Owns the TLS policy of both tiers: TLS 1.3 only, the ring provider passed explicitly,
//! client certificates mandatory and verified against the deployment CA on the server,
//! the server verified against the same CA on the client, ALPN [`ALPN`] on both. Never
//! opens a socket.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;

use super::{IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL, MAX_CONCURRENT_STREAMS, TransportError};
use crate::wire::ALPN;

/// Where a node's TLS material lives: PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The deployment CA certificate(s) peers must chain to.
    pub ca_cert: PathBuf,
    /// This node's certificate chain, leaf first.
    pub cert: PathBuf,
    /// This node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A node's loaded TLS identity and trust roots, ready to configure endpoints. Cheap to
/// clone.
#[derive(Clone)]
pub struct NodeTls {
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Loads the CA, the node's chain and key, and checks that they form valid server and
    /// client configurations (the key matches the certificate, the CA parses).
    ///
    /// # Errors
    /// [`TransportError::Io`] when a file cannot be read, [`TransportError::Tls`] when its
    /// contents are not usable PEM or the configuration is invalid.
    pub fn load(files: &TlsFiles) -> Result<Self, TransportError> {
        let roots = Arc::new(load_roots(&files.ca_cert)?);
        let chain = load_chain(&files.cert)?;
        let key = load_key(&files.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = server_crypto(&provider, &roots, chain.clone(), key.clone_key())?;
        let client = client_crypto(&provider, roots, chain, key)?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The quinn server configuration: mandatory client certificates, generous stream
    /// limits, keep-alives.
    pub(super) fn server_config(&self) -> quinn::ServerConfig {
        let mut config = quinn::ServerConfig::with_crypto(self.server.clone());
        let mut transport = transport_config();
        transport.max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into());
        config.transport_config(Arc::new(transport));
        config
    }

    /// The quinn client configuration: presents our certificate, verifies the server,
    /// sends a keep-alive after `keep_alive` without traffic (so a live region always has
    /// something to acknowledge, see [`super::Channel::received`]).
    pub(super) fn client_config(&self, keep_alive: Duration) -> quinn::ClientConfig {
        let mut config = quinn::ClientConfig::new(self.client.clone());
        let mut transport = transport_config();
        transport.keep_alive_interval(Some(keep_alive.min(KEEP_ALIVE_INTERVAL)));
        config.transport_config(Arc::new(transport));
        config
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    // 5 s fits a QUIC varint of milliseconds, so the conversion cannot fail; if the
    // constant ever grew too large we would fall back to quinn's default rather than panic.
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        transport.max_idle_timeout(Some(idle));
    }
    transport
}

fn server_crypto(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<QuicServerConfig, TransportError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| tls_error("client verifier", e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("server protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("server certificate", e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    QuicServerConfig::try_from(config).map_err(|e| tls_error("QUIC server config", e))
}

fn client_crypto(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<QuicClientConfig, TransportError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("client protocol versions", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls_error("client certificate", e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    QuicClientConfig::try_from(config).map_err(|e| tls_error("QUIC client config", e))
}

fn tls_error(what: &str, e: impl fmt::Display) -> TransportError {
    TransportError::Tls(format!("{what}: {e}"))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| {
        TransportError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    })
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&path.display().to_string(), e))?;
    if chain.is_empty() {
        return Err(tls_error(
            &path.display().to_string(),
            "no CERTIFICATE section",
        ));
    }
    Ok(chain)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in load_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| tls_error(&path.display().to_string(), e))?;
    }
    Ok(roots)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| tls_error(&path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = NodeTls::load(&files(dir.path())).expect_err("no files");
        assert!(matches!(err, TransportError::Io(_)), "{err}");
    }

    #[test]
    fn garbage_pem_is_a_tls_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = files(dir.path());
        for path in [&f.ca_cert, &f.cert, &f.key] {
            std::fs::write(path, "not a pem file").expect("write");
        }
        let err = NodeTls::load(&f).expect_err("garbage");
        assert!(matches!(err, TransportError::Tls(_)), "{err}");
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = super::super::dev_ca::init(dir.path()).expect("dev ca");
        let mixed = TlsFiles {
            key: certs.pop.key.clone(),
            ..certs.region.clone()
        };
        assert!(NodeTls::load(&certs.region).is_ok());
        let err = NodeTls::load(&mixed).expect_err("mismatched key");
        assert!(matches!(err, TransportError::Tls(_)), "{err}");
    }
}
