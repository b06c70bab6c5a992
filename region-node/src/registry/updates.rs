//! Store changes as the [`Update`]s a region pushes to its POPs: the records a POP needs
//! to authenticate and resolve (token hashes, `$LATEST`, versions, aliases), decoded from
//! the registry's keys and values, and tenant TLS certificates (with their keys: the push
//! stream is the tiers' mTLS connection). Tenant records and publish counters stay at the
//! region.

use super::functions::FunctionRecord;
use super::versions::{AliasRecord, VersionRecord};
use super::{Registry, decode};
use crate::store::{Bucket, Change, Entry, Op, Snapshot};
use common::model::{
    AliasName, ApiError, FunctionKey, FunctionName, Qualifier, ResolvedFunction, TenantId,
    TokenHash,
};
use common::wire::Update;
use std::num::NonZeroU32;
use tracing::warn;

/// The buckets whose changes are pushed to POPs.
pub const REGISTRY_BUCKETS: [Bucket; 5] = [
    Bucket::Tokens,
    Bucket::Functions,
    Bucket::Versions,
    Bucket::Aliases,
    Bucket::Certificates,
];

fn corrupt(key: &str) -> ApiError {
    ApiError::internal(format!("corrupt registry key {key}"))
}

/// Splits `tenant/name[/rest]`.
fn parse_key(key: &str) -> Result<(FunctionKey, Option<&str>), ApiError> {
    let mut parts = key.splitn(3, '/');
    let tenant = parts.next().and_then(|t| TenantId::new(t).ok());
    let name = parts.next().and_then(|n| FunctionName::new(n).ok());
    let (Some(tenant), Some(name)) = (tenant, name) else {
        return Err(corrupt(key));
    };
    Ok((FunctionKey { tenant, name }, parts.next()))
}

fn update(bucket: Bucket, key: &str, value: Option<&Entry>) -> Result<Option<Update>, ApiError> {
    Ok(Some(match bucket {
        Bucket::Tokens => {
            let record = value
                .map(|e| super::TokenRecord::decode(&e.value))
                .transpose()
                .map_err(|_| corrupt(key))?;
            Update::Token {
                hash: TokenHash::from_hex(key).ok_or_else(|| corrupt(key))?,
                expires_at_ms: record.as_ref().and_then(|r| r.expires_at_ms),
                tenant: record.map(|r| r.tenant),
            }
        }
        Bucket::Functions => {
            let (key, _) = parse_key(key)?;
            let latest = value
                .map(|e| {
                    decode::<FunctionRecord>(&e.value).map(|r| ResolvedFunction {
                        key: key.clone(),
                        version: Qualifier::Latest.to_string(),
                        digest: r.digest,
                        config: r.config,
                        revision: e.revision,
                        release: None,
                    })
                })
                .transpose()?;
            Update::Function { key, latest }
        }
        Bucket::Versions => {
            let (fkey, rest) = parse_key(key)?;
            // `tenant/name` alone is the publish counter: nothing a POP needs.
            let Some(rest) = rest else { return Ok(None) };
            let version = rest.parse::<NonZeroU32>().map_err(|_| corrupt(key))?;
            let function = value
                .map(|e| {
                    decode::<VersionRecord>(&e.value).map(|r| ResolvedFunction {
                        key: fkey.clone(),
                        version: version.to_string(),
                        digest: r.digest,
                        config: r.config,
                        revision: e.revision,
                        release: None,
                    })
                })
                .transpose()?;
            Update::Version {
                key: fkey,
                version,
                function,
            }
        }
        Bucket::Aliases => {
            let (fkey, rest) = parse_key(key)?;
            let alias = rest
                .and_then(|a| AliasName::new(a).ok())
                .ok_or_else(|| corrupt(key))?;
            let routing = value
                .map(|e| decode::<AliasRecord>(&e.value).map(|r| r.routing))
                .transpose()?;
            Update::Alias {
                key: fkey,
                alias,
                routing,
            }
        }
        Bucket::Certificates => Update::Certificate {
            host: key.to_owned(),
            certificate: value
                .map(|e| crate::certs::CertRecord::decode(&e.value).map(|r| r.pushed()))
                .transpose()?,
        },
        Bucket::Tenants
        | Bucket::Routes
        | Bucket::State
        | Bucket::Canary
        | Bucket::Limits
        | Bucket::Sizes
        | Bucket::Shares => {
            return Ok(None);
        }
    }))
}

fn logged(r: Result<Option<Update>, ApiError>) -> Option<Update> {
    r.unwrap_or_else(|e| {
        // One bad record must not stop the push of everything else; the POP falls back to
        // asking the region for what it did not get.
        warn!(error = %e, "registry record not pushed");
        None
    })
}

impl Registry {
    /// The update a store change means for POPs, if any.
    pub fn update_of(change: &Change) -> Option<Update> {
        let entry = match &change.op {
            Op::Put(value) => Some(Entry {
                value: value.clone(),
                revision: change.revision,
            }),
            Op::Delete => None,
        };
        logged(update(change.bucket, &change.key, entry.as_ref()))
    }

    /// The updates that rebuild a POP's state from `snapshot`.
    pub fn updates_of_snapshot(snapshot: &Snapshot) -> Vec<Update> {
        snapshot
            .entries
            .iter()
            .filter_map(|(bucket, key, entry)| logged(update(*bucket, key, Some(entry))))
            .collect()
    }
}
