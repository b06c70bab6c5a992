//! Tenant TLS certificates: a tenant uploads a chain and key for a host it owns, the
//! region checks them ([`common::edge::cert::check_upload`]), stores them in
//! [`Bucket::Certificates`] under the host (so they reach POPs over the push stream like
//! every registry change) and lists them by summary. The private key is stored and
//! pushed, never returned by any listing nor shown by any `Debug` or log line here.
//!
//! Ownership follows [`crate::hosts`]: uploading for a host claims it explicitly (the
//! claim is then kept when the tenant's routes go, so the certificate is not orphaned);
//! another tenant's host is refused with 409 `host_owned`, a host no tenant may claim
//! with 400 `host_not_allowed`. When an operator releases a host, [`Certificates::prune`]
//! deletes the certificates its former owner held under it.
//!
//! Bounded: [`QuotaConfig::certificates`] per tenant and
//! [`QuotaConfig::certificate_bytes`] per upload. Store calls block: async callers run
//! the writes on the blocking pool. Listings and expiries are served from memory.

use crate::hosts::{self, claim_root};
use crate::quota::{self, QuotaConfig};
use crate::registry::{Registry, decode, encode};
use crate::routes::Routes;
use crate::store::{Bucket, Expect};
use common::edge::cert::{CertSummary, check_upload};
use common::model::{ApiError, Quota, TenantId};
use common::wire::PushedCertificate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A certificate as stored under its host.
#[derive(Clone, Serialize, Deserialize)]
pub struct CertRecord {
    /// The host (normalised; `*.suffix` for a wildcard).
    pub host: String,
    /// The owning tenant.
    pub tenant: TenantId,
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The leaf's private key, PEM. Never returned, never logged.
    pub key_pem: String,
    /// What listings show.
    pub summary: CertSummary,
    /// When it was uploaded, milliseconds since the Unix epoch.
    pub uploaded_at_ms: u64,
}

impl std::fmt::Debug for CertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRecord")
            .field("host", &self.host)
            .field("tenant", &self.tenant)
            .field("summary", &self.summary)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CertRecord {
    /// Decodes a stored record.
    ///
    /// # Errors
    /// 500 for a corrupt record.
    pub fn decode(bytes: &[u8]) -> Result<Self, ApiError> {
        decode(bytes)
    }

    /// The record as pushed to POPs.
    pub fn pushed(self) -> PushedCertificate {
        PushedCertificate {
            tenant: self.tenant,
            chain_pem: self.chain_pem,
            key_pem: self.key_pem,
            not_after: self.summary.not_after,
        }
    }

    fn view(&self) -> CertView {
        CertView {
            host: self.host.clone(),
            tenant: self.tenant.clone(),
            summary: self.summary.clone(),
            uploaded_at_ms: self.uploaded_at_ms,
        }
    }
}

/// A certificate as listed: everything but the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertView {
    /// The host it is served for.
    #[schema(example = "shop.example")]
    pub host: String,
    /// The owning tenant.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// Subject, issuer, serial, fingerprint, names and validity of the leaf.
    #[serde(flatten)]
    pub summary: CertSummary,
    /// When it was uploaded, milliseconds since the Unix epoch.
    pub uploaded_at_ms: u64,
}

/// The stored certificates and the in-memory index listings read.
#[derive(Debug)]
pub struct Certificates {
    registry: Arc<Registry>,
    routes: Arc<Routes>,
    quotas: QuotaConfig,
    /// Every certificate's view, by host.
    index: RwLock<BTreeMap<String, CertView>>,
    /// Serialises writes so the count quota holds under concurrent uploads.
    writing: Mutex<()>,
}

impl Certificates {
    /// Loads the stored certificates.
    ///
    /// # Errors
    /// 500 when the store fails or holds a corrupt record.
    pub fn open(registry: Arc<Registry>, routes: Arc<Routes>) -> Result<Self, ApiError> {
        let mut index = BTreeMap::new();
        for (_, entry) in registry.store().list(Bucket::Certificates, "")? {
            let record = CertRecord::decode(&entry.value)?;
            index.insert(record.host.clone(), record.view());
        }
        Ok(Self {
            quotas: *registry.quotas(),
            registry,
            routes,
            index: RwLock::new(index),
            writing: Mutex::new(()),
        })
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, CertView>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, CertView>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The most bytes a `PUT` body may have (the JSON around the PEM included): twice the
    /// per-certificate quota, so escaping never refuses a certificate within it.
    pub fn max_body_bytes(&self) -> usize {
        usize::try_from(self.quotas.certificate_bytes.saturating_mul(2))
            .unwrap_or(usize::MAX)
            .saturating_add(1024)
    }

    /// Refuses an upload body over [`Self::max_body_bytes`] (not read further).
    pub fn body_too_large(&self) -> ApiError {
        self.too_large(self.max_body_bytes() as u64)
    }

    fn too_large(&self, got: u64) -> ApiError {
        ApiError::quota_exceeded(
            Quota::CertificateBytes,
            self.quotas.certificate_bytes,
            format!("a certificate of {got} bytes"),
            quota::DRAIN_RETRY,
        )
    }

    /// Stores `tenant`'s certificate for `raw_host` (replacing its earlier one), after
    /// checking it at `now_unix_s`.
    ///
    /// # Errors
    /// 413 `quota_exceeded` (`certificate_bytes`) for a chain and key over the quota;
    /// 400 for an invalid host; 400 `host_not_allowed` / 409 `host_owned` when the tenant
    /// may not own the host; 400 `invalid_certificate` when the chain or key does not
    /// parse, the key is not the leaf's, the leaf does not cover the host or has expired;
    /// 409 `quota_exceeded` (`certificates`) when the tenant holds its maximum.
    pub fn put(
        &self,
        tenant: &TenantId,
        raw_host: &str,
        chain_pem: String,
        key_pem: String,
        now_unix_s: i64,
    ) -> Result<CertView, ApiError> {
        let bytes = (chain_pem.len() + key_pem.len()) as u64;
        if bytes > self.quotas.certificate_bytes {
            return Err(self.too_large(bytes));
        }
        let host = hosts::normalise(raw_host)?;
        let (_, summary) =
            check_upload(chain_pem.as_bytes(), key_pem.as_bytes(), &host, now_unix_s)?;
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let root = claim_root(&host);
        let own = self.routes.hosts();
        let explicit_owner = own
            .nearest(root)
            .is_some_and(|c| c.tenant == *tenant && c.explicit);
        if !explicit_owner {
            // Claims it, or refuses with the ownership rules' typed error.
            self.routes.claim(tenant, root)?;
        }
        let held = {
            let index = self.index();
            index
                .values()
                .filter(|v| v.tenant == *tenant && v.host != host)
                .count() as u64
        };
        quota::check(
            Quota::Certificates,
            self.quotas.certificates,
            held,
            1,
            "certificates of this tenant",
        )?;
        let record = CertRecord {
            host: host.clone(),
            tenant: tenant.clone(),
            chain_pem,
            key_pem,
            summary,
            uploaded_at_ms: common::logs::now_ms(),
        };
        self.registry
            .store()
            .put(Bucket::Certificates, &host, &encode(&record)?, Expect::Any)?;
        let view = record.view();
        self.index_mut().insert(host, view.clone());
        tracing::info!(host = %view.host, tenant = %tenant, not_after = view.summary.not_after, "certificate stored");
        Ok(view)
    }

    /// The certificates of `tenant`, or every one for `None` (the operator), by host.
    pub fn list(&self, tenant: Option<&TenantId>) -> Vec<CertView> {
        self.index()
            .values()
            .filter(|v| tenant.is_none_or(|t| v.tenant == *t))
            .cloned()
            .collect()
    }

    /// Deletes the certificate for `raw_host`: a tenant (`Some`) only its own, the
    /// operator (`None`) anyone's.
    ///
    /// # Errors
    /// 400 for an invalid host; 404 when there is none (for a tenant: of its own).
    pub fn delete(&self, caller: Option<&TenantId>, raw_host: &str) -> Result<(), ApiError> {
        let host = hosts::normalise(raw_host)?;
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let found = self
            .index()
            .get(&host)
            .is_some_and(|v| caller.is_none_or(|t| v.tenant == *t));
        if !found {
            return Err(ApiError::not_found(format!("certificate for {host}")));
        }
        self.remove(&host)
    }

    fn remove(&self, host: &str) -> Result<(), ApiError> {
        self.registry
            .store()
            .delete(Bucket::Certificates, host, Expect::Any)?;
        self.index_mut().remove(host);
        tracing::info!(%host, "certificate deleted");
        Ok(())
    }

    /// Deletes the certificates whose tenant no longer owns their host (after an operator
    /// released it); returns how many.
    ///
    /// # Errors
    /// 500 when the store fails.
    pub fn prune(&self) -> Result<usize, ApiError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let own = self.routes.hosts();
        let orphaned: Vec<String> = self
            .index()
            .values()
            .filter(|v| !own.routable_by(&v.tenant, &v.host))
            .map(|v| v.host.clone())
            .collect();
        for host in &orphaned {
            self.remove(host)?;
        }
        Ok(orphaned.len())
    }

    /// Every certificate's host and end of validity (Unix seconds), soonest first.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> = self
            .index()
            .values()
            .map(|v| (v.host.clone(), v.summary.not_after))
            .collect();
        all.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use common::model::ErrorKind;

    const NOW: i64 = 1_800_000_000;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("valid")
    }

    fn setup(quotas: QuotaConfig) -> (tempfile::TempDir, Arc<Routes>, Certificates) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("r.redb")).expect("opens");
        let registry = Arc::new(Registry::new(store).with_quotas(quotas));
        for id in ["a", "b"] {
            registry.create_tenant(t(id), 512).expect("tenant");
        }
        let routes = Arc::new(Routes::open(Arc::clone(&registry)).expect("routes"));
        let certs = Certificates::open(registry, Arc::clone(&routes)).expect("opens");
        (dir, routes, certs)
    }

    /// A self-signed certificate for `name` valid until `until`: (chain, key).
    fn pem(name: &str, until: i64) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + std::time::Duration::from_secs(1_700_000_000);
        params.not_after =
            epoch + std::time::Duration::from_secs(u64::try_from(until).expect("positive"));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("signs");
        (cert.pem(), key.serialize_pem())
    }

    fn put(certs: &Certificates, tenant: &str, host: &str) -> Result<CertView, ApiError> {
        let (chain, key) = pem(host, NOW + 3600);
        certs.put(&t(tenant), host, chain, key, NOW)
    }

    #[test]
    fn an_upload_claims_the_host_and_another_tenant_is_refused() {
        let (_d, routes, certs) = setup(QuotaConfig::default());
        let view = put(&certs, "a", "Shop.Example").expect("stored");
        assert_eq!(view.host, "shop.example");
        assert_eq!(routes.owner_of("shop.example"), Some(t("a")));
        let err = put(&certs, "b", "shop.example").expect_err("owned");
        assert_eq!(err.kind, ErrorKind::HostOwned);
        let err = put(&certs, "b", "*.shop.example").expect_err("owned");
        assert_eq!(err.kind, ErrorKind::HostOwned);
        let err = put(&certs, "b", "*.example").expect_err("public suffix");
        assert_eq!(err.kind, ErrorKind::HostNotAllowed);
        assert_eq!(certs.list(Some(&t("b"))), []);
        let err = certs
            .delete(Some(&t("b")), "shop.example")
            .expect_err("not theirs");
        assert_eq!(err.kind, ErrorKind::NotFound);
        let listed = serde_json::to_string(&certs.list(None)).expect("json");
        assert!(!listed.contains("PRIVATE KEY"), "{listed}");
        certs
            .delete(Some(&t("a")), "shop.example")
            .expect("deleted");
        assert!(certs.list(None).is_empty());
    }

    #[test]
    fn expired_mismatched_and_oversized_uploads_are_refused_with_typed_errors() {
        let quotas = QuotaConfig {
            certificates: 1,
            certificate_bytes: 8 << 10,
            ..QuotaConfig::default()
        };
        let (_d, _r, certs) = setup(quotas);
        let (chain, key) = pem("old.example", NOW - 1);
        let err = certs
            .put(&t("a"), "old.example", chain, key, NOW)
            .expect_err("expired");
        assert_eq!(err.kind, ErrorKind::InvalidCertificate);
        let (chain, key) = pem("other.example", NOW + 60);
        let err = certs
            .put(&t("a"), "x.example", chain, key, NOW)
            .expect_err("not for it");
        assert_eq!(err.kind, ErrorKind::InvalidCertificate);
        let (chain, key) = pem("big.example", NOW + 60);
        let padded = format!("{chain}{}", "x".repeat(8 << 10));
        let err = certs
            .put(&t("a"), "big.example", padded, key, NOW)
            .expect_err("too big");
        assert_eq!(err.quota().map(|b| b.quota), Some(Quota::CertificateBytes));
        put(&certs, "a", "one.example").expect("first fits");
        put(&certs, "a", "one.example").expect("a replacement is not one more");
        let err = put(&certs, "a", "two.example").expect_err("count");
        assert_eq!(err.quota().map(|b| b.quota), Some(Quota::Certificates));
        put(&certs, "b", "b.example").expect("another tenant unaffected");
    }

    #[test]
    fn certificates_survive_a_restart_and_an_operator_release_prunes_them() {
        let (_d, routes, certs) = setup(QuotaConfig::default());
        put(&certs, "a", "shop.example").expect("stored");
        put(&certs, "a", "*.api.example").expect("stored");
        let registry = Arc::clone(&certs.registry);
        drop(certs);
        let certs = Certificates::open(registry, Arc::clone(&routes)).expect("reopens");
        assert_eq!(
            certs.expiries(),
            vec![
                ("*.api.example".to_owned(), NOW + 3600),
                ("shop.example".to_owned(), NOW + 3600)
            ]
        );
        routes.release(None, "shop.example").expect("released");
        assert_eq!(certs.prune().expect("prunes"), 1);
        assert_eq!(certs.list(None).len(), 1);
    }
}
