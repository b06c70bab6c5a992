//! Tenant certificates, checked before a region stores them and summarised for listings:
//! the chain parses (rustls-pki-types PEM, x509-parser DER), the key is the leaf's
//! ([`super::tls::certified_key`]), the leaf names the host in its subject alternative
//! names, and it is valid at the time given. Never performs I/O and never reads the
//! clock: callers pass `now`. Private keys are only handed on to rustls; no error, summary
//! or `Debug` here contains one.

use super::tls::{CertError, certified_key};
use crate::model::{ApiError, ErrorKind};
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why an uploaded certificate was refused. Every variant maps to 400
/// `invalid_certificate`.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The chain or key does not parse, or the key is not the leaf's.
    #[error(transparent)]
    Pair(#[from] CertError),
    /// The leaf's subject alternative names do not cover the host.
    #[error("the certificate does not cover {host}: it names {names:?}")]
    NotForHost {
        /// The host (or `*.suffix`) it was uploaded for.
        host: String,
        /// The DNS names the leaf carries.
        names: Vec<String>,
    },
    /// The leaf's validity ended before `now`.
    #[error("the certificate expired at {not_after} (Unix seconds)")]
    Expired {
        /// The end of its validity, seconds since the Unix epoch.
        not_after: i64,
    },
}

impl From<CertificateError> for ApiError {
    fn from(e: CertificateError) -> Self {
        ApiError::new(ErrorKind::InvalidCertificate, e.to_string())
    }
}

/// What a listing shows of a certificate: never its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertSummary {
    /// The leaf's subject, e.g. `CN=shop.example`.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// The leaf's serial number, hex bytes separated by `:`.
    pub serial: String,
    /// SHA-256 of the leaf's DER, lower-case hex: what `openssl x509 -fingerprint
    /// -sha256` prints, without the colons.
    pub fingerprint: String,
    /// The leaf's DNS subject alternative names.
    pub names: Vec<String>,
    /// Start of the leaf's validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of the leaf's validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Whether a leaf naming `names` covers `host`: a `*.suffix` host needs exactly that
/// wildcard name; a plain host its own name or a wildcard one label above it.
pub fn names_cover(names: &[String], host: &str) -> bool {
    let has = |n: &str| names.iter().any(|m| m.eq_ignore_ascii_case(n));
    if host.starts_with("*.") {
        return has(host);
    }
    has(host)
        || host
            .split_once('.')
            .is_some_and(|(_, parent)| has(&format!("*.{parent}")))
}

/// Summarises a DER leaf.
///
/// # Errors
/// [`CertError::Chain`] when it does not parse.
pub fn summarise(leaf: &CertificateDer<'_>) -> Result<CertSummary, CertError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| CertError::Chain(format!("leaf: {e}")))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Chain(format!("subject alternative names: {e}")))?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let validity = cert.validity();
    Ok(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        fingerprint: hex::encode(Sha256::digest(leaf.as_ref())),
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// Checks an upload of `chain_pem` (leaf first) and `key_pem` for `host` (normalised,
/// maybe `*.suffix`) at `now_unix_s`: every certificate in the chain parses, the key is the
/// leaf's, the leaf covers the host and has not expired.
///
/// # Errors
/// [`CertificateError`] naming the first check that failed.
pub fn check_upload(
    chain_pem: &[u8],
    key_pem: &[u8],
    host: &str,
    now_unix_s: i64,
) -> Result<(CertifiedKey, CertSummary), CertificateError> {
    let key = certified_key(chain_pem, key_pem)?;
    for (i, der) in key.cert.iter().enumerate().skip(1) {
        X509Certificate::from_der(der.as_ref())
            .map_err(|e| CertError::Chain(format!("certificate {} of the chain: {e}", i + 1)))?;
    }
    let leaf = key
        .cert
        .first()
        .ok_or_else(|| CertError::Chain("no CERTIFICATE block".into()))?;
    let summary = summarise(leaf)?;
    if !names_cover(&summary.names, host) {
        return Err(CertificateError::NotForHost {
            host: host.to_owned(),
            names: summary.names,
        });
    }
    if summary.not_after <= now_unix_s {
        return Err(CertificateError::Expired {
            not_after: summary.not_after,
        });
    }
    Ok((key, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// A certificate for `names` valid from `from` to `until` (Unix seconds): (chain, key).
    fn cert(names: &[&str], from: i64, until: i64) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_s(from);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_s(until);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("signs");
        (cert.pem(), key.serialize_pem())
    }

    fn time_s(s: i64) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(s).expect("positive"))
    }

    fn check(names: &[&str], host: &str, until: i64) -> Result<CertSummary, CertificateError> {
        let (chain, key) = cert(names, NOW - 10, until);
        check_upload(chain.as_bytes(), key.as_bytes(), host, NOW).map(|(_, s)| s)
    }

    #[test]
    fn a_leaf_covers_its_names_and_one_label_under_its_wildcards() {
        let s = check(&["shop.example"], "shop.example", NOW + 60).expect("covers");
        assert_eq!(s.names, ["shop.example"]);
        assert_eq!(s.not_after, NOW + 60);
        assert_eq!(s.fingerprint.len(), 64);
        check(&["*.shop.example"], "a.shop.example", NOW + 60).expect("wildcard covers");
        check(&["*.shop.example"], "*.shop.example", NOW + 60).expect("same wildcard");
        for (names, host) in [
            (&["shop.example"][..], "other.example"),
            (&["*.shop.example"], "a.b.shop.example"),
            (&["*.shop.example"], "shop.example"),
            (&["a.shop.example"], "*.shop.example"),
        ] {
            let err = check(names, host, NOW + 60).expect_err(host);
            assert!(matches!(err, CertificateError::NotForHost { .. }), "{err}");
        }
    }

    #[test]
    fn an_expired_leaf_is_refused_and_the_error_is_typed() {
        let err = check(&["shop.example"], "shop.example", NOW - 1).expect_err("expired");
        assert!(matches!(err, CertificateError::Expired { not_after } if not_after == NOW - 1));
        let api = ApiError::from(err);
        assert_eq!(api.kind, ErrorKind::InvalidCertificate);
        let (chain, _) = cert(&["shop.example"], NOW - 10, NOW + 60);
        let (_, other) = cert(&["shop.example"], NOW - 10, NOW + 60);
        let err = check_upload(chain.as_bytes(), other.as_bytes(), "shop.example", NOW)
            .expect_err("another key");
        assert!(matches!(
            err,
            CertificateError::Pair(CertError::Mismatch(_))
        ));
        assert!(!format!("{err:?}").contains("PRIVATE KEY"));
    }
}
