//! HTTPS at the device edge: the per-host certificate table chosen by SNI and the rustls
//! server configurations (TLS 1.2/1.3, ALPN `h2` and `http/1.1` over TCP; TLS 1.3, ALPN
//! `h3` over QUIC, served by [`super::http3`]). Connections are served by
//! the shared loop, [`super::server::serve_tls`], with the same limits as plain HTTP.
//!
//! SNI policy: an exact host match, then a `*.parent` wildcard entry, then the node's
//! default certificate; without a default the handshake fails cleanly. A certificate
//! registered for one host is never served for another. Private keys never leave this
//! module except into rustls, and no `Debug` here prints them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use tokio_rustls::TlsAcceptor;

/// ALPN protocols offered to devices, preferred first.
pub const HTTPS_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate chain and key were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The chain PEM holds no certificate or does not parse.
    #[error("certificate chain: {0}")]
    Chain(String),
    /// The key PEM holds no private key or does not parse.
    #[error("private key: {0}")]
    Key(String),
    /// The key is not the leaf certificate's key, or is of an unsupported kind.
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
}

/// Parses a PEM chain (leaf first) and a PEM private key into a rustls identity, checking
/// that the key belongs to the leaf.
///
/// # Errors
/// [`CertError`] naming what is wrong; the key's bytes are never part of the message.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Chain("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::Key(e.to_string()))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| CertError::Mismatch(e.to_string()))?;
    Ok(certified)
}

/// [`certified_key`] from files.
///
/// # Errors
/// [`CertError`] when a file cannot be read or its contents are not accepted.
pub fn certified_key_from_files(
    chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<CertifiedKey, CertError> {
    let chain_pem =
        std::fs::read(chain).map_err(|e| CertError::Chain(format!("{}: {e}", chain.display())))?;
    let key_pem =
        std::fs::read(key).map_err(|e| CertError::Key(format!("{}: {e}", key.display())))?;
    certified_key(&chain_pem, &key_pem)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The per-host certificates a node serves, chosen by SNI. Shared by every HTTPS
/// connection; updates (a tenant's upload, a rotation) take effect for the next
/// handshake without a restart.
#[derive(Default)]
pub struct CertTable {
    hosts: RwLock<HashMap<String, HostCert>>,
    default: RwLock<Option<Arc<CertifiedKey>>>,
}

/// A host's certificate and, for a tenant's, the end of its validity: past it the entry
/// is skipped as if absent (a wildcard or the default answers), so an expired
/// certificate is never presented.
struct HostCert {
    key: Arc<CertifiedKey>,
    not_after: Option<SystemTime>,
}

impl HostCert {
    fn live(&self, now: SystemTime) -> Option<Arc<CertifiedKey>> {
        match self.not_after {
            Some(end) if end <= now => None,
            _ => Some(Arc::clone(&self.key)),
        }
    }
}

impl fmt::Debug for CertTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host names only: never key material.
        let hosts: Vec<String> = read(&self.hosts).keys().cloned().collect();
        f.debug_struct("CertTable")
            .field("hosts", &hosts)
            .field("default", &read(&self.default).is_some())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A writer that panicked cannot leave a half-updated map: inserts are single calls.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CertTable {
    /// An empty table: every handshake fails until a certificate or default is set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `key` for `host` (lower-cased; `*.example.com` covers one label below
    /// `example.com`), replacing any earlier certificate for it.
    pub fn insert(&self, host: &str, key: CertifiedKey) {
        self.insert_until(host, key, None);
    }

    /// As [`Self::insert`], serving `key` only until `not_after` (a tenant's certificate):
    /// from then on the handshake falls through to a wildcard entry or the default.
    pub fn insert_until(&self, host: &str, key: CertifiedKey, not_after: Option<SystemTime>) {
        let entry = HostCert {
            key: Arc::new(key),
            not_after,
        };
        write(&self.hosts).insert(host.to_ascii_lowercase(), entry);
    }

    /// Stops serving a certificate for `host`; true if there was one.
    pub fn remove(&self, host: &str) -> bool {
        write(&self.hosts)
            .remove(&host.to_ascii_lowercase())
            .is_some()
    }

    /// Replaces the whole host map at once (a full sync from the region).
    pub fn replace_all(&self, hosts: HashMap<String, CertifiedKey>) {
        let map = hosts
            .into_iter()
            .map(|(h, k)| {
                let entry = HostCert {
                    key: Arc::new(k),
                    not_after: None,
                };
                (h.to_ascii_lowercase(), entry)
            })
            .collect();
        *write(&self.hosts) = map;
    }

    /// Sets (or clears) the certificate served for an unknown or absent SNI.
    pub fn set_default(&self, key: Option<CertifiedKey>) {
        *write(&self.default) = key.map(Arc::new);
    }

    /// The hosts with a certificate, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = read(&self.hosts).keys().cloned().collect();
        hosts.sort();
        hosts
    }

    /// The certificate a handshake naming `sni` gets now: see [`Self::lookup_at`].
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.lookup_at(sni, SystemTime::now())
    }

    /// The certificate a handshake naming `sni` gets at `now`: exact host, then wildcard,
    /// then the default; an entry expired at `now` counts as absent.
    pub fn lookup_at(&self, sni: Option<&str>, now: SystemTime) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let hosts = read(&self.hosts);
            if let Some(key) = hosts.get(&name).and_then(|e| e.live(now)) {
                return Some(key);
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = hosts.get(&format!("*.{parent}")).and_then(|e| e.live(now))
            {
                return Some(key);
            }
        }
        read(&self.default).clone()
    }
}

impl ResolvesServerCert for CertTable {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// The rustls server configuration for device HTTPS: certificates from `table`, ALPN
/// [`HTTPS_ALPN`], no client certificates.
///
/// # Errors
/// When the provider rejects its own default protocol versions (not expected).
pub fn https_server_config(table: Arc<CertTable>) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(table);
    config.alpn_protocols = HTTPS_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The ALPN protocol of HTTP/3.
pub const H3_ALPN: &[u8] = b"h3";

/// The rustls server configuration for device HTTP/3 (QUIC): certificates from `table`
/// (the same table as [`https_server_config`], so a host's certificate serves both), TLS
/// 1.3 only as QUIC requires, ALPN [`H3_ALPN`]. Early data (0-RTT) stays off: it can be
/// replayed, and an invocation is not idempotent.
///
/// # Errors
/// When the provider does not support TLS 1.3 (not expected).
pub fn h3_server_config(table: Arc<CertTable>) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(table);
    config.alpn_protocols = vec![H3_ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `host`: (chain PEM, key PEM).
    fn self_signed(host: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("rcgen");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn key_for(host: &str) -> CertifiedKey {
        let (chain, key) = self_signed(host);
        certified_key(chain.as_bytes(), key.as_bytes()).expect("valid pair")
    }

    fn leaf(found: Option<Arc<CertifiedKey>>) -> Option<Vec<u8>> {
        found.map(|k| k.cert[0].to_vec())
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcard_then_default_never_another_host() {
        let table = CertTable::new();
        let shop = key_for("shop.example");
        let wild = key_for("*.api.example");
        let (shop_der, wild_der) = (shop.cert[0].to_vec(), wild.cert[0].to_vec());
        table.insert("SHOP.example", shop);
        table.insert("*.api.example", wild);
        assert_eq!(leaf(table.lookup(Some("shop.example."))), Some(shop_der));
        assert_eq!(leaf(table.lookup(Some("v1.api.example"))), Some(wild_der));
        // Two labels below a wildcard, an unknown name, no SNI: no default, nothing.
        assert!(table.lookup(Some("a.v1.api.example")).is_none());
        assert!(table.lookup(Some("other.example")).is_none());
        assert!(table.lookup(None).is_none());
        let default = key_for("default.invalid");
        let default_der = default.cert[0].to_vec();
        table.set_default(Some(default));
        assert_eq!(leaf(table.lookup(Some("other.example"))), Some(default_der));
        assert!(table.remove("shop.example"));
        assert_eq!(table.hosts(), vec!["*.api.example".to_owned()]);
    }

    #[test]
    fn an_expired_entry_is_skipped_for_the_wildcard_or_default() {
        let table = CertTable::new();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let exact = key_for("a.shop.example");
        let wild = key_for("*.shop.example");
        let (exact_der, wild_der) = (exact.cert[0].to_vec(), wild.cert[0].to_vec());
        let end = now + std::time::Duration::from_secs(60);
        table.insert_until("a.shop.example", exact, Some(end));
        table.insert("*.shop.example", wild);
        assert_eq!(
            leaf(table.lookup_at(Some("a.shop.example"), now)),
            Some(exact_der)
        );
        assert_eq!(
            leaf(table.lookup_at(Some("a.shop.example"), end)),
            Some(wild_der)
        );
        table.remove("*.shop.example");
        assert!(table.lookup_at(Some("a.shop.example"), end).is_none());
    }

    #[test]
    fn a_key_of_another_certificate_or_garbage_is_refused() {
        let (chain, _) = self_signed("a.example");
        let (_, other_key) = self_signed("b.example");
        assert!(matches!(
            certified_key(chain.as_bytes(), other_key.as_bytes()),
            Err(CertError::Mismatch(_))
        ));
        assert!(matches!(
            certified_key(b"not pem", other_key.as_bytes()),
            Err(CertError::Chain(_))
        ));
        assert!(matches!(
            certified_key(chain.as_bytes(), b"not pem"),
            Err(CertError::Key(_))
        ));
    }
}
