//! The function registry: tenants, tokens and functions, as typed records over the
//! [`Store`]. Every read and write is scoped to one tenant; a tenant can never name
//! another tenant's function because keys are `tenant/name`.

use crate::store::{Bucket, Expect, Store, StoreError};
use common::model::{
    ApiError, ArtifactDigest, ErrorKind, FunctionConfig, FunctionKey, FunctionName, Qualifier,
    ResolvedFunction, TenantId,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// A function (`$LATEST`) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FunctionRecord {
    config: FunctionConfig,
    digest: ArtifactDigest,
    size_bytes: u64,
    updated_at_ms: u64,
}

/// A function as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionView {
    /// The function's name.
    pub name: FunctionName,
    /// Its configuration.
    pub config: FunctionConfig,
    /// SHA-256 of its module.
    pub digest: ArtifactDigest,
    /// Module size in bytes.
    pub size_bytes: u64,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
    /// Registry revision of the last change (use it for conditional updates).
    pub revision: u64,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { key, .. } => ApiError::new(
                ErrorKind::Conflict,
                format!("{key} was changed concurrently; re-read it and retry"),
            ),
            StoreError::Backend(m) => ApiError::internal(format!("store: {m}")),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn function_key(tenant: &TenantId, name: &FunctionName) -> String {
    format!("{tenant}/{name}")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(format!("encoding record: {e}")))
}

/// Typed access to tenants, tokens and functions.
#[derive(Debug)]
pub struct Registry {
    store: Store,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
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

    /// Issues a new token for tenant `id`; only its hash is stored, so this is the one time
    /// the token is visible.
    ///
    /// # Errors
    /// 404 when the tenant does not exist.
    pub fn create_token(&self, id: &TenantId) -> Result<String, ApiError> {
        self.tenant(id)?;
        let token = format!("st_{}", hex::encode(rand::random::<[u8; 24]>()));
        self.store.put(
            Bucket::Tokens,
            &token_hash(&token),
            id.as_str().as_bytes(),
            Expect::Absent,
        )?;
        Ok(token)
    }

    /// The tenant `token` belongs to.
    ///
    /// # Errors
    /// 401 when the token is absent or unknown.
    pub fn authenticate(&self, token: Option<&str>) -> Result<TenantId, ApiError> {
        let token = token.ok_or_else(ApiError::unauthenticated)?;
        let e = self
            .store
            .get(Bucket::Tokens, &token_hash(token))?
            .ok_or_else(ApiError::unauthenticated)?;
        let id =
            String::from_utf8(e.value).map_err(|_| ApiError::internal("corrupt token record"))?;
        TenantId::new(id).map_err(|e| ApiError::internal(format!("corrupt token record: {e}")))
    }

    /// Stores `wasm` (already validated by the caller) and makes it `$LATEST` of
    /// `tenant/name` with `config`. With `expect_revision`, the write only happens if the
    /// function is still at that revision.
    ///
    /// # Errors
    /// 400 for a config over the tenant's limits, 409 on a lost race, 500 on store failure.
    pub fn deploy(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        config: FunctionConfig,
        wasm: &[u8],
        expect_revision: Option<u64>,
    ) -> Result<FunctionView, ApiError> {
        let t = self.tenant(tenant)?;
        config
            .validate(t.max_memory_mb)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let digest = self.store.put_blob(wasm)?;
        let rec = FunctionRecord {
            config,
            digest,
            size_bytes: wasm.len() as u64,
            updated_at_ms: now_ms(),
        };
        let expect = expect_revision.map_or(Expect::Any, Expect::Revision);
        let revision = self.store.put(
            Bucket::Functions,
            &function_key(tenant, name),
            &encode(&rec)?,
            expect,
        )?;
        Ok(view(name.clone(), rec, revision))
    }

    /// The function `tenant/name`.
    ///
    /// # Errors
    /// 404 when it does not exist in this tenant.
    pub fn function(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
    ) -> Result<FunctionView, ApiError> {
        let e = self
            .store
            .get(Bucket::Functions, &function_key(tenant, name))?
            .ok_or_else(|| ApiError::not_found(format!("function {name}")))?;
        Ok(view(name.clone(), decode(&e.value)?, e.revision))
    }

    /// Every function of `tenant`, by name.
    ///
    /// # Errors
    /// 500 on store failure.
    pub fn functions(&self, tenant: &TenantId) -> Result<Vec<FunctionView>, ApiError> {
        let prefix = format!("{tenant}/");
        self.store
            .list(Bucket::Functions, &prefix)?
            .into_iter()
            .map(|(k, e)| {
                let name = FunctionName::new(&k[prefix.len()..])
                    .map_err(|e| ApiError::internal(format!("corrupt key {k}: {e}")))?;
                Ok(view(name, decode(&e.value)?, e.revision))
            })
            .collect()
    }

    /// Deletes `tenant/name`.
    ///
    /// # Errors
    /// 404 when it does not exist.
    pub fn delete_function(&self, tenant: &TenantId, name: &FunctionName) -> Result<(), ApiError> {
        if self
            .store
            .delete(Bucket::Functions, &function_key(tenant, name), Expect::Any)?
        {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("function {name}")))
        }
    }

    /// What `qualifier` of `tenant/name` runs.
    ///
    /// # Errors
    /// 404 for an unknown function or a qualifier that does not exist.
    pub fn resolve(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        qualifier: &Qualifier,
    ) -> Result<ResolvedFunction, ApiError> {
        if *qualifier != Qualifier::Latest {
            return Err(ApiError::not_found(format!(
                "version {qualifier} of {name}"
            )));
        }
        let f = self.function(tenant, name)?;
        Ok(ResolvedFunction {
            key: FunctionKey {
                tenant: tenant.clone(),
                name: f.name,
            },
            version: Qualifier::Latest.to_string(),
            digest: f.digest,
            config: f.config,
            revision: f.revision,
        })
    }

    /// The module with `digest`.
    ///
    /// # Errors
    /// 404 when no such module is stored.
    pub fn module(&self, digest: &ArtifactDigest) -> Result<Vec<u8>, ApiError> {
        self.store
            .get_blob(digest)?
            .ok_or_else(|| ApiError::not_found(format!("module {digest}")))
    }
}

fn view(name: FunctionName, rec: FunctionRecord, revision: u64) -> FunctionView {
    FunctionView {
        name,
        config: rec.config,
        digest: rec.digest,
        size_bytes: rec.size_bytes,
        updated_at_ms: rec.updated_at_ms,
        revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.authenticate(Some(&tok)), Ok(t("a")));
        assert_eq!(
            r.authenticate(Some("st_nope")).map_err(|e| e.kind),
            Err(ErrorKind::Unauthenticated)
        );
        assert_eq!(
            r.authenticate(None).map_err(|e| e.kind),
            Err(ErrorKind::Unauthenticated)
        );
    }

    #[test]
    fn functions_are_scoped_to_their_tenant() {
        let (_d, r) = registry();
        r.create_tenant(t("a"), 512).expect("tenant");
        r.create_tenant(t("b"), 512).expect("tenant");
        r.deploy(&t("a"), &f("x"), FunctionConfig::default(), b"\0asm", None)
            .expect("deploy");
        assert!(r.function(&t("a"), &f("x")).is_ok());
        assert_eq!(
            r.function(&t("b"), &f("x")).map_err(|e| e.kind),
            Err(ErrorKind::NotFound)
        );
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
