//! The function registry: tenants, tokens, functions (`$LATEST`), published versions and
//! aliases, as typed records over the [`Store`]. Every read and write is scoped to one
//! tenant; a tenant can never name another tenant's function because every key starts
//! with `tenant/`.
//!
//! - this file: tenants, record encoding;
//! - [`functions`](self::functions): deploy, read, list, delete, resolve a qualifier;
//! - [`versions`](self::versions): publish, versions, aliases;
//! - [`blobs`](self::blobs): deleting code blobs nothing refers to any more;
//! - [`tokens`](self::tokens): tokens (hashed), their expiry, listing, revoking, rotating;
//! - [`updates`](self::updates): store changes as the updates pushed to POPs.

mod blobs;
mod functions;
mod lookup;
mod tokens;
mod updates;
mod versions;

pub use functions::FunctionView;
pub use lookup::LookupError;
pub use tokens::{AuthError, TokenRecord, TokenView};
pub use updates::REGISTRY_BUCKETS;

use crate::quota::QuotaConfig;
use crate::store::{Bucket, Expect, Store, StoreError};
use common::model::{ApiError, ErrorKind, FunctionName, TenantId};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default per-tenant memory maximum, in MiB.
pub const DEFAULT_TENANT_MAX_MEMORY_MB: u32 = 1024;

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The tenant's id.
    pub id: TenantId,
    /// Largest `memory_mb` any of its functions may configure.
    pub max_memory_mb: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { key, .. } => ApiError::new(
                ErrorKind::Conflict,
                format!("{key} was changed concurrently; re-read it and retry"),
            ),
            StoreError::StreamFull { stream, max } => ApiError::unavailable(
                format!("{stream} holds its maximum of {max} messages; retry later"),
                std::time::Duration::from_secs(1),
            ),
            StoreError::Backend(m) => ApiError::internal(format!("store: {m}")),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn function_key(tenant: &TenantId, name: &FunctionName) -> String {
    format!("{tenant}/{name}")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("corrupt record: {e}")))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(format!("encoding record: {e}")))
}

/// Typed access to tenants, tokens and functions.
#[derive(Debug)]
pub struct Registry {
    store: Store,
    /// Serialises publishes in this process. The version counter's revision already stops
    /// two publishes from taking the same number, but the "is `$LATEST` already the newest
    /// version?" check reads the counter and the version record in two steps, so two
    /// racing publishes of the same code could both pass it and create two versions.
    /// (Across region processes sharing one store, the counter still serialises numbers;
    /// the duplicate check is then best effort.)
    publish_lock: std::sync::Mutex<()>,
    /// Serialises deploys and the writes that drop blob references (see `blobs`).
    blob_lock: std::sync::Mutex<()>,
    /// The per-tenant quotas on functions, versions and env.
    quotas: QuotaConfig,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            publish_lock: std::sync::Mutex::new(()),
            blob_lock: std::sync::Mutex::new(()),
            quotas: QuotaConfig::default(),
        }
    }

    /// Enforces `quotas` instead of the defaults.
    #[must_use]
    pub fn with_quotas(mut self, quotas: QuotaConfig) -> Self {
        self.quotas = quotas;
        self
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &QuotaConfig {
        &self.quotas
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates tenant `id`.
    ///
    /// # Errors
    /// 409 when it exists.
    pub fn create_tenant(
        &self,
        id: TenantId,
        max_memory_mb: u32,
    ) -> Result<TenantRecord, ApiError> {
        let rec = TenantRecord {
            id,
            max_memory_mb,
            created_at_ms: now_ms(),
        };
        self.store
            .put(
                Bucket::Tenants,
                rec.id.as_str(),
                &encode(&rec)?,
                Expect::Absent,
            )
            .map_err(|e| match e {
                StoreError::Conflict { .. } => ApiError::new(
                    ErrorKind::Conflict,
                    format!("tenant {} already exists", rec.id),
                ),
                e => e.into(),
            })?;
        Ok(rec)
    }

    /// The tenant `id`.
    ///
    /// # Errors
    /// 404 when it does not exist.
    pub fn tenant(&self, id: &TenantId) -> Result<TenantRecord, ApiError> {
        let e = self
            .store
            .get(Bucket::Tenants, id.as_str())?
            .ok_or_else(|| ApiError::not_found(format!("tenant {id}")))?;
        decode(&e.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::model::{ArtifactDigest, FunctionConfig};

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("r.redb")).expect("opens");
        (dir, Registry::new(store))
    }

    fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("valid")
    }

    fn f(s: &str) -> FunctionName {
        FunctionName::new(s).expect("valid")
    }

    #[test]
    fn tokens_authenticate_their_tenant_only() {
        let (_d, r) = registry();
        r.create_tenant(t("a"), 512).expect("tenant");
        let tok = r.create_token(&t("a")).expect("token");
        assert_eq!(r.authenticate(Some(&tok)).ok(), Some(t("a")));
        let unknown = r.authenticate(Some("st_nope")).expect_err("unknown");
        assert!(matches!(unknown, AuthError::Unknown));
        assert_eq!(unknown.fault(), common::model::Fault::Device);
        let missing = ApiError::from(r.authenticate(None).expect_err("missing"));
        assert_eq!(missing.kind, ErrorKind::Unauthenticated);
    }

    #[test]
    fn functions_are_scoped_to_their_tenant() {
        let (_d, r) = registry();
        r.create_tenant(t("a"), 512).expect("tenant");
        r.create_tenant(t("b"), 512).expect("tenant");
        r.deploy(&t("a"), &f("x"), FunctionConfig::default(), b"\0asm", None)
            .expect("deploy");
        assert!(r.function(&t("a"), &f("x")).is_ok());
        assert!(matches!(
            r.function(&t("b"), &f("x")),
            Err(LookupError::Function(n)) if n == f("x")
        ));
        assert!(r.functions(&t("b")).expect("list").is_empty());
        assert_eq!(
            r.delete_function(&t("b"), &f("x")).map_err(|e| e.kind),
            Err(ErrorKind::NotFound)
        );
    }

    #[test]
    fn memory_over_the_tenant_maximum_is_refused() {
        let (_d, r) = registry();
        r.create_tenant(t("a"), 256).expect("tenant");
        let cfg = FunctionConfig {
            memory_mb: 512,
            ..FunctionConfig::default()
        };
        let err = r
            .deploy(&t("a"), &f("x"), cfg, b"\0asm", None)
            .expect_err("refused");
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(r.functions(&t("a")).expect("list").is_empty());
    }

    #[test]
    fn a_stale_revision_loses_with_conflict() {
        let (_d, r) = registry();
        r.create_tenant(t("a"), 512).expect("tenant");
        let v1 = r
            .deploy(&t("a"), &f("x"), FunctionConfig::default(), b"1", None)
            .expect("deploy");
        r.deploy(
            &t("a"),
            &f("x"),
            FunctionConfig::default(),
            b"2",
            Some(v1.revision),
        )
        .expect("first update wins");
        let err = r
            .deploy(
                &t("a"),
                &f("x"),
                FunctionConfig::default(),
                b"3",
                Some(v1.revision),
            )
            .expect_err("second loses");
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert_eq!(
            r.function(&t("a"), &f("x")).expect("get").digest,
            ArtifactDigest::of(b"2")
        );
    }
}
