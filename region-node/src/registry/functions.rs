//! Functions (`$LATEST`): deploy, read, list, delete, and resolving a qualifier to what
//! runs.

use super::versions::{VersionRecord, version_key};
use super::{LookupError, Registry, decode, encode, function_key, now_ms};
use crate::quota;
use crate::store::{Bucket, Expect};
use common::model::{
    ApiError, ArtifactDigest, FunctionConfig, FunctionKey, FunctionName, Qualifier, Quota,
    ResolvedFunction, TenantId,
};
use common::policy::version::{self, Target};
use serde::{Deserialize, Serialize};

/// A function (`$LATEST`) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FunctionRecord {
    pub(crate) config: FunctionConfig,
    pub(crate) digest: ArtifactDigest,
    pub(crate) size_bytes: u64,
    pub(crate) updated_at_ms: u64,
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

pub(crate) fn view(name: FunctionName, rec: FunctionRecord, revision: u64) -> FunctionView {
    FunctionView {
        name,
        config: rec.config,
        digest: rec.digest,
        size_bytes: rec.size_bytes,
        updated_at_ms: rec.updated_at_ms,
        revision,
    }
}

impl Registry {
    /// Stores `wasm` (already validated by the caller) and makes it `$LATEST` of
    /// `tenant/name` with `config`. With `expect_revision`, the write only happens if the
    /// function is still at that revision.
    ///
    /// # Errors
    /// 400 for a config over the tenant's limits, 413 `quota_exceeded` for an env over
    /// `env_bytes`, 409 `quota_exceeded` for a new function past `functions`, 409 on a
    /// lost race, 500 on store failure. A replaced module's blob is deleted when nothing
    /// else refers to it.
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
        self.quotas.check_env(&config)?;
        let key = function_key(tenant, name);
        let _blobs = self.blob_lock();
        let old = self.store.get(Bucket::Functions, &key)?;
        if old.is_none() {
            let have = self
                .store
                .list(Bucket::Functions, &format!("{tenant}/"))?
                .len();
            quota::check(
                Quota::Functions,
                self.quotas.functions,
                have as u64,
                1,
                "functions of this tenant",
            )?;
        }
        let digest = self.store.put_blob(wasm)?;
        let rec = FunctionRecord {
            config,
            digest,
            size_bytes: wasm.len() as u64,
            updated_at_ms: now_ms(),
        };
        let expect = expect_revision.map_or(Expect::Any, Expect::Revision);
        let revision = self
            .store
            .put(Bucket::Functions, &key, &encode(&rec)?, expect)?;
        let replaced = old.and_then(|e| decode::<FunctionRecord>(&e.value).ok());
        if let Some(old) = replaced.filter(|o| o.digest != rec.digest) {
            self.collect_blobs([old.digest])?;
        }
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
    ) -> Result<FunctionView, LookupError> {
        let e = self
            .store
            .get(Bucket::Functions, &function_key(tenant, name))?
            .ok_or_else(|| LookupError::Function(name.clone()))?;
        let record = decode(&e.value).map_err(LookupError::Record)?;
        Ok(view(name.clone(), record, e.revision))
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

    /// Deletes `tenant/name` with its versions and aliases. The function record goes
    /// first, so nothing of it resolves any more while the rest is removed.
    ///
    /// # Errors
    /// 404 when it does not exist.
    pub fn delete_function(&self, tenant: &TenantId, name: &FunctionName) -> Result<(), ApiError> {
        let key = function_key(tenant, name);
        let _blobs = self.blob_lock();
        let Some(old) = self.store.get(Bucket::Functions, &key)? else {
            return Err(ApiError::not_found(format!("function {name}")));
        };
        if !self.store.delete(Bucket::Functions, &key, Expect::Any)? {
            return Err(ApiError::not_found(format!("function {name}")));
        }
        let mut dropped: Vec<ArtifactDigest> = decode::<FunctionRecord>(&old.value)
            .map(|r| r.digest)
            .into_iter()
            .collect();
        let prefix = format!("{key}/");
        for bucket in [Bucket::Aliases, Bucket::Versions] {
            for (k, e) in self.store.list(bucket, &prefix)? {
                self.store.delete(bucket, &k, Expect::Any)?;
                if bucket == Bucket::Versions
                    && let Ok(v) = decode::<VersionRecord>(&e.value)
                {
                    dropped.push(v.digest);
                }
            }
        }
        // The publish counter: a function created again under this name starts at 1.
        self.store.delete(Bucket::Versions, &key, Expect::Any)?;
        self.collect_blobs(dropped)
    }

    /// What `qualifier` of `tenant/name` runs; `draw` is the random number that picks
    /// between an alias's two versions (`policy::version::name`, shared with the POP).
    ///
    /// # Errors
    /// [`LookupError`] for an unknown function, alias or version, or a failing store.
    pub fn resolve(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        qualifier: &Qualifier,
        draw: u64,
    ) -> Result<ResolvedFunction, LookupError> {
        let f = self.function(tenant, name)?;
        let key = FunctionKey {
            tenant: tenant.clone(),
            name: f.name,
        };
        // The region prepares a version before it runs it, so it never serves the previous
        // one: no previous routing is looked up.
        let named = version::name(qualifier, draw, |a| {
            self.alias_routing(tenant, name, a)
                .map(|r| r.map(|r| (r, None)))
        })?
        .ok_or_else(|| LookupError::Alias {
            alias: qualifier.clone(),
            name: name.clone(),
        })?;
        let version = match named.target {
            Target::Latest => {
                return Ok(ResolvedFunction {
                    key,
                    version: Qualifier::Latest.to_string(),
                    digest: f.digest,
                    config: f.config,
                    revision: f.revision,
                    release: None,
                });
            }
            Target::Version(n) => n,
        };
        let e = self
            .store
            .get(Bucket::Versions, &version_key(tenant, name, version))?
            .ok_or_else(|| LookupError::Version {
                version,
                name: name.clone(),
            })?;
        let rec: VersionRecord = decode(&e.value).map_err(LookupError::Record)?;
        Ok(ResolvedFunction {
            key,
            version: version.to_string(),
            digest: rec.digest,
            config: rec.config,
            revision: e.revision,
            release: None,
        })
    }

    /// The module with `digest`.
    ///
    /// # Errors
    /// [`LookupError::Module`] when no such module is stored, [`LookupError::Store`] when
    /// the store fails.
    pub fn module(&self, digest: &ArtifactDigest) -> Result<Vec<u8>, LookupError> {
        self.store
            .get_blob(digest)?
            .ok_or(LookupError::Module(*digest))
    }
}
