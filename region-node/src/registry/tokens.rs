//! Tenant tokens: issued once, stored only as their SHA-256 ([`TokenHash`]) with the
//! tenant, creation time and an optional expiry; listed, revoked (deleted: the deletion is
//! pushed to every POP, which forgets the token at once) and rotated (a new token, then
//! the old one revoked).
//!
//! Records written before expiry existed hold the bare tenant id; they still decode (as
//! never expiring).

use super::{Registry, decode, encode, now_ms};
use crate::store::{Bucket, Expect, StoreError};
use common::model::{ApiError, Fault, TenantId, TokenHash};
use serde::{Deserialize, Serialize};

/// Why a bearer token was not accepted ([`Registry::authenticate`]).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request bore no token.
    #[error("no token")]
    Missing,
    /// No such token: never issued, or revoked.
    #[error("unknown or revoked token")]
    Unknown,
    /// The token's expiry has passed.
    #[error("the token has expired")]
    Expired,
    /// The token store could not be read.
    #[error("the token store failed")]
    Store(#[from] StoreError),
    /// The token's stored record does not decode.
    #[error("the token's record is corrupt")]
    Record(#[source] ApiError),
    /// The blocking task checking the token ended without an answer.
    #[error("the token check task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl AuthError {
    /// Whose fault it is: the caller's for a missing, unknown or expired token, the
    /// region's for a failing store or task.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Missing | Self::Unknown | Self::Expired => Fault::Device,
            Self::Store(_) | Self::Record(_) | Self::Task(_) => Fault::Internal,
        }
    }
}

/// How the edges render a refused token: one 401 whatever the reason (a caller learns
/// nothing about which tokens exist), the store's error when it failed.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let fault = e.fault();
        match e {
            AuthError::Missing | AuthError::Unknown | AuthError::Expired => {
                ApiError::unauthenticated()
            }
            AuthError::Store(e) => ApiError::from(e),
            AuthError::Record(e) => e,
            AuthError::Task(e) => ApiError::internal(format!("auth task failed: {e}")),
        }
        .with_fault(fault)
    }
}

/// A token as stored under its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Whose token it is.
    pub tenant: TenantId,
    /// When it was issued, milliseconds since the Unix epoch (0 for old records).
    pub created_at_ms: u64,
    /// When it stops being accepted, milliseconds since the Unix epoch; `None` never.
    pub expires_at_ms: Option<u64>,
}

impl TokenRecord {
    /// Decodes a stored record (JSON, or an old record's bare tenant id).
    ///
    /// # Errors
    /// 500 when it is neither.
    pub fn decode(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.first() == Some(&b'{') {
            return decode(bytes);
        }
        let id = std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| TenantId::new(t).ok())
            .ok_or_else(|| ApiError::internal("corrupt token record"))?;
        Ok(Self {
            tenant: id,
            created_at_ms: 0,
            expires_at_ms: None,
        })
    }

    /// Whether it is expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// A token as listed: its id (the hash: the token itself is never kept), dates, state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    /// The token's id: the hex SHA-256 of the token; names it to revoke or rotate.
    pub id: String,
    /// Whose token it is.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// When it was issued, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When it stops being accepted; null for never.
    pub expires_at_ms: Option<u64>,
    /// Whether it has expired.
    pub expired: bool,
}

/// Most a token's time to live may be: ten years, in seconds.
pub const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

impl Registry {
    /// Issues a new token for tenant `id`, valid for `ttl_s` seconds (`None`: until
    /// revoked); only its hash is stored, so this is the one time the token is visible.
    ///
    /// # Errors
    /// 404 when the tenant does not exist; 400 for a zero or over-long `ttl_s`.
    pub fn create_token_for(&self, id: &TenantId, ttl_s: Option<u64>) -> Result<String, ApiError> {
        if ttl_s.is_some_and(|t| t == 0 || t > MAX_TTL_S) {
            return Err(ApiError::bad_request(format!(
                "ttl_s must be between 1 and {MAX_TTL_S}"
            )));
        }
        self.tenant(id)?;
        let token = format!("st_{}", hex::encode(rand::random::<[u8; 24]>()));
        let now = now_ms();
        let record = TokenRecord {
            tenant: id.clone(),
            created_at_ms: now,
            expires_at_ms: ttl_s.map(|t| now.saturating_add(t.saturating_mul(1000))),
        };
        self.store.put(
            Bucket::Tokens,
            TokenHash::of(&token).as_str(),
            &encode(&record)?,
            Expect::Absent,
        )?;
        Ok(token)
    }

    /// Issues a new token for tenant `id` that does not expire.
    ///
    /// # Errors
    /// 404 when the tenant does not exist.
    pub fn create_token(&self, id: &TenantId) -> Result<String, ApiError> {
        self.create_token_for(id, None)
    }

    /// The tenant `token` belongs to.
    ///
    /// # Errors
    /// [`AuthError`] when the token is absent, unknown, revoked or expired, or the store
    /// fails.
    pub fn authenticate(&self, token: Option<&str>) -> Result<TenantId, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let e = self
            .store
            .get(Bucket::Tokens, TokenHash::of(token).as_str())?
            .ok_or(AuthError::Unknown)?;
        let record = TokenRecord::decode(&e.value).map_err(AuthError::Record)?;
        if record.expired(now_ms()) {
            return Err(AuthError::Expired);
        }
        Ok(record.tenant)
    }

    /// The tokens of tenant `id`, expired ones included.
    ///
    /// # Errors
    /// 404 when the tenant does not exist.
    pub fn tokens(&self, id: &TenantId) -> Result<Vec<TokenView>, ApiError> {
        self.tenant(id)?;
        let now = now_ms();
        let mut views = Vec::new();
        for (hash, entry) in self.store.list(Bucket::Tokens, "")? {
            let Ok(r) = TokenRecord::decode(&entry.value) else {
                continue;
            };
            if &r.tenant == id {
                views.push(TokenView {
                    id: hash,
                    expired: r.expired(now),
                    tenant: r.tenant,
                    created_at_ms: r.created_at_ms,
                    expires_at_ms: r.expires_at_ms,
                });
            }
        }
        Ok(views)
    }

    /// Revokes tenant `id`'s token `token_id` (its hash): it is deleted, and the deletion
    /// reaches every POP over the push stream.
    ///
    /// # Errors
    /// 400 for a malformed id; 404 when the tenant has no such token.
    pub fn revoke_token(&self, id: &TenantId, token_id: &str) -> Result<(), ApiError> {
        let hash = TokenHash::from_hex(token_id)
            .ok_or_else(|| ApiError::bad_request("a token id is 64 lowercase hex digits"))?;
        let e = self
            .store
            .get(Bucket::Tokens, hash.as_str())?
            .filter(|e| TokenRecord::decode(&e.value).is_ok_and(|r| &r.tenant == id))
            .ok_or_else(|| ApiError::not_found(format!("token {hash} of tenant {id}")))?;
        self.store
            .delete(Bucket::Tokens, hash.as_str(), Expect::Revision(e.revision))?;
        Ok(())
    }

    /// Replaces tenant `id`'s token `token_id` with a new one (valid for `ttl_s`): the new
    /// token is issued first, then the old one revoked.
    ///
    /// # Errors
    /// As [`Registry::create_token_for`] and [`Registry::revoke_token`]; nothing changes
    /// when the old token is not the tenant's.
    pub fn rotate_token(
        &self,
        id: &TenantId,
        token_id: &str,
        ttl_s: Option<u64>,
    ) -> Result<String, ApiError> {
        let hash = TokenHash::from_hex(token_id)
            .ok_or_else(|| ApiError::bad_request("a token id is 64 lowercase hex digits"))?;
        let owned = self
            .store
            .get(Bucket::Tokens, hash.as_str())?
            .is_some_and(|e| TokenRecord::decode(&e.value).is_ok_and(|r| &r.tenant == id));
        if !owned {
            return Err(ApiError::not_found(format!("token {hash} of tenant {id}")));
        }
        let token = self.create_token_for(id, ttl_s)?;
        self.revoke_token(id, token_id)?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use common::model::ErrorKind;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("r.redb")).expect("opens");
        let r = Registry::new(store);
        for t in ["a", "b"] {
            r.create_tenant(TenantId::new(t).expect("id"), 512)
                .expect("tenant");
        }
        (dir, r)
    }

    fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("valid")
    }

    #[test]
    fn a_revoked_token_is_refused_and_unlisted() {
        let (_d, r) = registry();
        let tok = r.create_token(&t("a")).expect("token");
        let id = TokenHash::of(&tok).to_string();
        assert_eq!(r.tokens(&t("a")).expect("list")[0].id, id);
        assert_eq!(
            r.revoke_token(&t("b"), &id).map_err(|e| e.kind),
            Err(ErrorKind::NotFound),
            "another tenant's token is not found"
        );
        assert_eq!(r.authenticate(Some(&tok)).ok(), Some(t("a")));
        r.revoke_token(&t("a"), &id).expect("revoked");
        assert!(matches!(
            r.authenticate(Some(&tok)),
            Err(AuthError::Unknown)
        ));
        assert!(r.tokens(&t("a")).expect("list").is_empty());
    }

    #[test]
    fn rotation_issues_a_new_token_and_revokes_the_old() {
        let (_d, r) = registry();
        let old = r.create_token(&t("a")).expect("token");
        let new = r
            .rotate_token(&t("a"), TokenHash::of(&old).as_str(), Some(60))
            .expect("rotated");
        assert!(r.authenticate(Some(&old)).is_err());
        assert_eq!(r.authenticate(Some(&new)).ok(), Some(t("a")));
        let listed = r.tokens(&t("a")).expect("list");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].expires_at_ms.is_some() && !listed[0].expired);
    }

    #[test]
    fn expired_tokens_are_refused_and_old_records_still_decode() {
        let record = TokenRecord {
            tenant: t("a"),
            created_at_ms: 1,
            expires_at_ms: Some(10),
        };
        assert!(record.expired(10) && !record.expired(9));
        assert_eq!(
            TokenRecord::decode(b"a").expect("old record").tenant,
            t("a")
        );
        assert!(TokenRecord::decode(b"{\"x\":1}").is_err());
        let (_d, r) = registry();
        assert_eq!(
            r.create_token_for(&t("a"), Some(0)).map_err(|e| e.kind),
            Err(ErrorKind::BadRequest)
        );
    }
}
