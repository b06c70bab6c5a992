//! Published versions (immutable snapshots of `$LATEST`) and aliases (names pointing at one
//! version or two with weights).
//!
//! Keys: a version is `tenant/name/NNNNNNNNNN` (zero-padded so keys sort by number); the
//! function's publish counter is `tenant/name` in the same bucket, so version numbers are
//! never reused even after the newest is deleted; an alias is `tenant/name/alias`.

use super::{LookupError, Registry, decode, encode, function_key, now_ms};
use crate::store::{Bucket, Expect, StoreError};
use common::model::{
    Alias, AliasName, AliasRouting, ApiError, ArtifactDigest, ErrorKind, FunctionConfig,
    FunctionName, Rollback, TenantId, Version,
};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// A published version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    pub(crate) digest: ArtifactDigest,
    pub(crate) config: FunctionConfig,
    #[serde(default)]
    pub(crate) description: Option<String>,
    pub(crate) created_at: u64,
}

/// An alias as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AliasRecord {
    pub(crate) routing: AliasRouting,
    #[serde(default)]
    pub(crate) auto_rollback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rolled_back: Option<Rollback>,
}

impl AliasRecord {
    fn into_alias(self, name: AliasName, function: &FunctionName, revision: u64) -> Alias {
        Alias {
            name,
            function: function.clone(),
            routing: self.routing,
            auto_rollback: self.auto_rollback,
            rolled_back: self.rolled_back,
            revision,
        }
    }
}

/// Longest publish description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 256;

pub(crate) fn version_key(tenant: &TenantId, name: &FunctionName, n: NonZeroU32) -> String {
    format!("{tenant}/{name}/{:010}", n.get())
}

fn alias_key(tenant: &TenantId, name: &FunctionName, alias: &AliasName) -> String {
    format!("{tenant}/{name}/{alias}")
}

fn version(name: &FunctionName, n: NonZeroU32, rec: VersionRecord) -> Version {
    Version {
        function: name.clone(),
        version: n,
        digest: rec.digest,
        config: rec.config,
        description: rec.description,
        created_at: rec.created_at,
    }
}

fn lost_race(name: &FunctionName, what: &str) -> impl FnOnce(StoreError) -> ApiError {
    let message = format!("another {what} of {name} happened at the same time; retry");
    move |e| match e {
        StoreError::Conflict { .. } => ApiError::new(ErrorKind::Conflict, message),
        e => e.into(),
    }
}

impl Registry {
    /// Publishes `$LATEST` of `tenant/name` as a new numbered version. When the newest
    /// version already has `$LATEST`'s code and config, returns it instead (`false`).
    ///
    /// # Errors
    /// 404 for an unknown function, 400 for an over-long description, 409 when another
    /// publish of the same function won a race, 409 `quota_exceeded` past
    /// `versions_per_function`.
    pub fn publish(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        description: Option<String>,
    ) -> Result<(Version, bool), ApiError> {
        if description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
        {
            return Err(ApiError::bad_request(format!(
                "description is longer than {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        // Held until the version record is written; see `Registry::publish_lock`. A panic
        // while holding it leaves nothing half-done that the lock protects.
        let _serial = self
            .publish_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let latest = self.function(tenant, name)?;
        let mut existing = self.versions(tenant, name)?;
        let count = existing.len() as u64;
        if let Some(newest) = existing.pop()
            && newest.digest == latest.digest
            && newest.config == latest.config
        {
            return Ok((newest, false));
        }
        crate::quota::check(
            common::model::Quota::VersionsPerFunction,
            self.quotas.versions_per_function,
            count,
            1,
            "published versions of this function",
        )?;
        let counter_key = function_key(tenant, name);
        let counter = self.store.get(Bucket::Versions, &counter_key)?;
        let (last, expect) = match counter {
            Some(e) => (decode::<u32>(&e.value)?, Expect::Revision(e.revision)),
            None => (0, Expect::Absent),
        };
        let n = last
            .checked_add(1)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| ApiError::bad_request(format!("{name} has no version numbers left")))?;
        // The counter is the point of serialisation: of two racing publishes one moves it
        // and the other gets 409. The version key cannot exist yet (numbers only grow).
        self.store
            .put(Bucket::Versions, &counter_key, &encode(&n.get())?, expect)
            .map_err(lost_race(name, "publish"))?;
        let rec = VersionRecord {
            digest: latest.digest,
            config: latest.config,
            description,
            created_at: now_ms(),
        };
        self.store
            .put(
                Bucket::Versions,
                &version_key(tenant, name, n),
                &encode(&rec)?,
                Expect::Absent,
            )
            .map_err(lost_race(name, "publish"))?;
        Ok((version(name, n, rec), true))
    }

    /// The published versions of `tenant/name`, oldest first.
    ///
    /// # Errors
    /// 404 for an unknown function.
    pub fn versions(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
    ) -> Result<Vec<Version>, ApiError> {
        self.function(tenant, name)?;
        let prefix = format!("{}/", function_key(tenant, name));
        self.store
            .list(Bucket::Versions, &prefix)?
            .into_iter()
            .map(|(k, e)| {
                let n = k[prefix.len()..]
                    .parse::<NonZeroU32>()
                    .map_err(|_| ApiError::internal(format!("corrupt version key {k}")))?;
                Ok(version(name, n, decode(&e.value)?))
            })
            .collect()
    }

    /// Deletes version `n` of `tenant/name`.
    ///
    /// # Errors
    /// 404 when it does not exist, 409 when an alias points at it. Its module's blob is
    /// deleted when nothing else refers to it.
    pub fn delete_version(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        n: NonZeroU32,
    ) -> Result<(), ApiError> {
        self.function(tenant, name)?;
        let key = version_key(tenant, name, n);
        self.refuse_if_pinned(tenant, name, n)?;
        let Some(old) = self.store.get(Bucket::Versions, &key)? else {
            return Err(ApiError::not_found(format!("version {n} of {name}")));
        };
        self.store
            .delete(Bucket::Versions, &key, Expect::Revision(old.revision))
            .map_err(lost_race(name, "change"))?;
        // An alias set concurrently may have checked the version before it went: look
        // again, and put the (immutable) version back if one points at it now. With the
        // same re-check in `set_alias`, one of the two always sees the other.
        if let Err(pinned) = self.refuse_if_pinned(tenant, name, n) {
            self.store
                .put(Bucket::Versions, &key, &old.value, Expect::Absent)?;
            return Err(pinned);
        }
        let _blobs = self.blob_lock();
        match decode::<VersionRecord>(&old.value) {
            Ok(v) => self.collect_blobs([v.digest]),
            Err(_) => Ok(()),
        }
    }

    fn refuse_if_pinned(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        n: NonZeroU32,
    ) -> Result<(), ApiError> {
        match self
            .aliases(tenant, name)?
            .into_iter()
            .find(|a| a.routing.targets(n))
        {
            Some(a) => Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "alias {} points at version {n} of {name}; move or delete the alias first",
                    a.name
                ),
            )),
            None => Ok(()),
        }
    }

    fn missing_version(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        routing: &AliasRouting,
    ) -> Result<Option<NonZeroU32>, ApiError> {
        for r in routing.routes() {
            if self
                .store
                .get(Bucket::Versions, &version_key(tenant, name, r.version))?
                .is_none()
            {
                return Ok(Some(r.version));
            }
        }
        Ok(None)
    }

    /// Points alias `alias` of `tenant/name` at `routing`, creating or moving it;
    /// `auto_rollback` asks the region to roll a two-version routing back to its older
    /// version when the newer one fails more often (see `crate::rollout`).
    ///
    /// # Errors
    /// 404 for an unknown function, 400 when a version in `routing` does not exist.
    pub fn set_alias(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        alias: AliasName,
        routing: AliasRouting,
        auto_rollback: bool,
    ) -> Result<Alias, ApiError> {
        self.function(tenant, name)?;
        let missing = |v: NonZeroU32| {
            ApiError::bad_request(format!(
                "version {v} of {name} does not exist; publish it first"
            ))
        };
        if let Some(v) = self.missing_version(tenant, name, &routing)? {
            return Err(missing(v));
        }
        let key = alias_key(tenant, name, &alias);
        let previous = self.store.get(Bucket::Aliases, &key)?;
        let rec = AliasRecord {
            routing,
            auto_rollback,
            rolled_back: None,
        };
        let revision = self
            .store
            .put(Bucket::Aliases, &key, &encode(&rec)?, Expect::Any)?;
        // A version deleted concurrently may have been checked before this alias existed:
        // look again and undo this write if so (see `delete_version`).
        if let Some(v) = self.missing_version(tenant, name, &rec.routing)? {
            let undo = match &previous {
                Some(p) => {
                    self.store
                        .put(Bucket::Aliases, &key, &p.value, Expect::Revision(revision))
                }
                None => self
                    .store
                    .delete(Bucket::Aliases, &key, Expect::Revision(revision))
                    .map(|_| revision),
            };
            // A conflict means someone else has written the alias since; theirs stands.
            match undo {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            return Err(missing(v));
        }
        Ok(rec.into_alias(alias, name, revision))
    }

    /// Rolls alias `alias` of `tenant/name` back as `rollback` says, if it still routes
    /// as `rollback.from` (an owner's move in the meantime wins); returns the alias as
    /// rolled back, or `None` when it moved or is gone.
    ///
    /// # Errors
    /// A store failure.
    pub fn roll_back_alias(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        alias: &AliasName,
        rollback: Rollback,
    ) -> Result<Option<Alias>, ApiError> {
        let key = alias_key(tenant, name, alias);
        let Some(e) = self.store.get(Bucket::Aliases, &key)? else {
            return Ok(None);
        };
        let rec: AliasRecord = decode(&e.value)?;
        if rec.routing != rollback.from {
            return Ok(None);
        }
        let rec = AliasRecord {
            routing: AliasRouting::single(rollback.to),
            auto_rollback: rec.auto_rollback,
            rolled_back: Some(rollback),
        };
        match self.store.put(
            Bucket::Aliases,
            &key,
            &encode(&rec)?,
            Expect::Revision(e.revision),
        ) {
            Ok(revision) => Ok(Some(rec.into_alias(alias.clone(), name, revision))),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every alias of every function of every tenant (at start-up, to find the rollouts
    /// to judge), as `(tenant, alias)`; unreadable records are skipped.
    ///
    /// # Errors
    /// A store failure.
    pub fn all_aliases(&self) -> Result<Vec<(TenantId, Alias)>, ApiError> {
        Ok(self
            .store
            .list(Bucket::Aliases, "")?
            .into_iter()
            .filter_map(|(k, e)| {
                let mut parts = k.splitn(3, '/');
                let tenant = TenantId::new(parts.next()?).ok()?;
                let function = FunctionName::new(parts.next()?).ok()?;
                let alias = AliasName::new(parts.next()?).ok()?;
                let rec: AliasRecord = decode(&e.value).ok()?;
                Some((tenant, rec.into_alias(alias, &function, e.revision)))
            })
            .collect())
    }

    /// Every alias of `tenant` an automatic rollback set (for its notifications).
    ///
    /// # Errors
    /// A store failure.
    pub fn rolled_back_aliases(&self, tenant: &TenantId) -> Result<Vec<Alias>, ApiError> {
        Ok(self
            .store
            .list(Bucket::Aliases, &format!("{tenant}/"))?
            .into_iter()
            .filter_map(|(k, e)| {
                let mut parts = k.splitn(3, '/').skip(1);
                let function = FunctionName::new(parts.next()?).ok()?;
                let alias = AliasName::new(parts.next()?).ok()?;
                let rec: AliasRecord = decode(&e.value).ok()?;
                rec.rolled_back
                    .is_some()
                    .then(|| rec.into_alias(alias, &function, e.revision))
            })
            .collect())
    }

    /// The routing of alias `alias`, if it exists.
    pub(crate) fn alias_routing(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        alias: &AliasName,
    ) -> Result<Option<AliasRouting>, LookupError> {
        self.store
            .get(Bucket::Aliases, &alias_key(tenant, name, alias))?
            .map(|e| decode::<AliasRecord>(&e.value).map(|r| r.routing))
            .transpose()
            .map_err(LookupError::Record)
    }

    /// Alias `alias` of `tenant/name`.
    ///
    /// # Errors
    /// 404 when the function or alias does not exist.
    pub fn alias(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        alias: &AliasName,
    ) -> Result<Alias, ApiError> {
        self.function(tenant, name)?;
        let e = self
            .store
            .get(Bucket::Aliases, &alias_key(tenant, name, alias))?
            .ok_or_else(|| ApiError::not_found(format!("alias {alias} of {name}")))?;
        let rec: AliasRecord = decode(&e.value)?;
        Ok(rec.into_alias(alias.clone(), name, e.revision))
    }

    /// Every alias of `tenant/name`, by name.
    ///
    /// # Errors
    /// 404 for an unknown function.
    pub fn aliases(&self, tenant: &TenantId, name: &FunctionName) -> Result<Vec<Alias>, ApiError> {
        self.function(tenant, name)?;
        let prefix = format!("{}/", function_key(tenant, name));
        self.store
            .list(Bucket::Aliases, &prefix)?
            .into_iter()
            .map(|(k, e)| {
                let alias = AliasName::new(&k[prefix.len()..])
                    .map_err(|_| ApiError::internal(format!("corrupt alias key {k}")))?;
                let rec: AliasRecord = decode(&e.value)?;
                Ok(rec.into_alias(alias, name, e.revision))
            })
            .collect()
    }

    /// Deletes alias `alias` of `tenant/name`.
    ///
    /// # Errors
    /// 404 when the function or alias does not exist.
    pub fn delete_alias(
        &self,
        tenant: &TenantId,
        name: &FunctionName,
        alias: &AliasName,
    ) -> Result<(), ApiError> {
        self.function(tenant, name)?;
        if self.store.delete(
            Bucket::Aliases,
            &alias_key(tenant, name, alias),
            Expect::Any,
        )? {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("alias {alias} of {name}")))
        }
    }
}

#[cfg(test)]
#[path = "versions_tests.rs"]
mod tests;
