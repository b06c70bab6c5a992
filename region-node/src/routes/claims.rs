//! Explicit host claims: a tenant claims or releases a host it may use, an operator
//! assigns any host (IP literals and `localhost` included) to a tenant or releases it,
//! and both list claims (a tenant its own, the operator all).

use super::Routes;
use crate::hosts::{self, HostClaim, claim_root, covers};
use crate::store::{Bucket, Expect};
use common::model::{ApiError, ErrorKind, TenantId};

/// Normalises a host to claim: a wildcard is refused (a claim already covers every name
/// under its host).
fn claimable(raw: &str) -> Result<String, ApiError> {
    let host = hosts::normalise(raw)?;
    if host.starts_with("*.") {
        return Err(ApiError::bad_request(format!(
            "claim {} itself: a host's claim covers every name under it",
            claim_root(&host)
        )));
    }
    Ok(host)
}

impl Routes {
    /// The claims `tenant` holds, or every claim for `None` (the operator), by host.
    pub fn claims(&self, tenant: Option<&TenantId>) -> Vec<HostClaim> {
        self.hosts()
            .claims()
            .iter()
            .filter(|c| tenant.is_none_or(|t| c.tenant == *t))
            .cloned()
            .collect()
    }

    /// `tenant` claims `raw` explicitly: kept until released, whatever its routes do.
    ///
    /// # Errors
    /// 400 for an invalid host or a wildcard; 400 `host_not_allowed` for a host a tenant
    /// may not claim; 409 `host_owned` when another tenant's claim overlaps it.
    pub fn claim(&self, tenant: &TenantId, raw: &str) -> Result<HostClaim, ApiError> {
        let host = claimable(raw)?;
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let own = self.stored_hosts()?;
        if own.owner_of(&host) != Some(tenant) {
            hosts::tenant_may_claim(&host)?;
            own.check_claim(tenant, &host)?;
        }
        self.write_explicit(&host, tenant)
    }

    /// The operator assigns `raw` to `tenant` (any valid host, including IP literals and
    /// `localhost`).
    ///
    /// # Errors
    /// 400 for an invalid host; 404 for an unknown tenant; 409 `host_owned` when another
    /// tenant's claim overlaps it (release that first).
    pub fn assign(&self, raw: &str, tenant: &TenantId) -> Result<HostClaim, ApiError> {
        let host = claimable(raw)?;
        self.registry.tenant(tenant)?;
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.stored_hosts()?.check_claim(tenant, &host)?;
        self.write_explicit(&host, tenant)
    }

    /// Writes `tenant`'s explicit claim on `host`, conditional on the stored claim it
    /// read: a region sharing the store that claimed the same host meanwhile makes this
    /// write fail with 409 `host_owned` instead of being overwritten.
    fn write_explicit(&self, host: &str, tenant: &TenantId) -> Result<HostClaim, ApiError> {
        let stored = self
            .registry
            .store()
            .get(Bucket::Routes, &super::claim_key(host))?;
        let (expect, claimed_at_ms) = match stored {
            Some(entry) => {
                let held = super::decode_claim(&entry.value)?;
                if held.tenant != *tenant {
                    return Err(ApiError::new(
                        ErrorKind::HostOwned,
                        format!("host {host} was claimed meanwhile"),
                    ));
                }
                (Expect::Revision(entry.revision), held.claimed_at_ms)
            }
            None => (Expect::Absent, common::logs::now_ms()),
        };
        let claim = HostClaim {
            host: host.to_owned(),
            tenant: tenant.clone(),
            explicit: true,
            claimed_at_ms,
        };
        self.put_claim(&claim, expect)?;
        self.changed()?;
        Ok(claim)
    }

    /// Releases the claim on `raw`. A tenant (`Some`) releases its own: the claim stays,
    /// implicit, while its routes are under it. The operator (`None`) releases anyone's
    /// and deletes the owner's routes the claim held (like removing a custom domain).
    ///
    /// # Errors
    /// 400 for an invalid host; 404 when there is no such claim (for a tenant: of its own).
    pub fn release(&self, caller: Option<&TenantId>, raw: &str) -> Result<(), ApiError> {
        let host = claimable(raw)?;
        let not_found = || ApiError::not_found(format!("claim on host {host}"));
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let own = self.hosts();
        let claim = own.claim(&host).ok_or_else(not_found)?.clone();
        if caller.is_some_and(|t| *t != claim.tenant) {
            return Err(not_found());
        }
        let (routes, _) = self.stored()?;
        let held: Vec<_> = routes
            .iter()
            .filter(|r| r.tenant == claim.tenant)
            .filter(|r| {
                let root = claim_root(r.host.as_str());
                covers(&host, root)
                    && !own.claims().iter().any(|c| {
                        c.host != host && c.tenant == claim.tenant && covers(&c.host, root)
                    })
            })
            .collect();
        if caller.is_some() && !held.is_empty() {
            self.put_claim(
                &HostClaim {
                    explicit: false,
                    ..claim
                },
                crate::store::Expect::Any,
            )?;
        } else {
            for r in held {
                self.registry.store().delete(
                    Bucket::Routes,
                    r.id.as_str(),
                    crate::store::Expect::Any,
                )?;
            }
            self.delete_claim(&host)?;
        }
        self.changed()
    }
}
