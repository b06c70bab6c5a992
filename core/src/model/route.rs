//! HTTP routes (CDN-style request routing): a (host, path prefix) pair owned by a tenant
//! that maps plain device requests to one of its functions.
//!
//! Owns validation of host patterns and path prefixes and the identity of a route. Never
//! matches requests (that is [`crate::edge`]'s route table) and never stores anything.

use super::{FunctionName, NameError, Qualifier, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Longest accepted host pattern, in bytes (the DNS limit).
pub const MAX_HOST_LEN: usize = 253;
/// Longest accepted path prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 1024;
/// The path space the platform's own API lives in; no route may claim it.
pub const RESERVED_PREFIX: &str = "/v1";

/// Why a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The host is not a hostname or `*.suffix` wildcard.
    #[error(
        "host {0:?} must be a hostname (labels of a-z, 0-9 and '-', separated by dots) or \
         `*.` followed by one, without a port"
    )]
    Host(String),
    /// The path prefix is malformed.
    #[error(
        "path_prefix {0:?} must start with '/', be at most {MAX_PREFIX_LEN} bytes and \
             contain no whitespace, '?', '#' or '%'"
    )]
    Prefix(String),
    /// The path prefix claims the platform API.
    #[error("path_prefix {0:?} is reserved for the Strata API (/v1)")]
    Reserved(String),
    /// The function name or qualifier is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The affinity cookie or header name is not a valid name.
    #[error(
        "affinity {0:?} must name a cookie or header: 1 to {MAX_AFFINITY_NAME_LEN} bytes of \
         a-z, A-Z, 0-9, '-' and '_'"
    )]
    Affinity(String),
}

/// Longest affinity cookie or header name.
pub const MAX_AFFINITY_NAME_LEN: usize = 64;

/// Where a route's requests carry their affinity key when they have no
/// `x-strata-affinity` header: a cookie or a request header of the device's own (a
/// session id, a user id), so a visitor's requests reach the same warm instance and stay
/// on one version of a weighted alias. JSON: `{"cookie": "sid"}` or `{"header": "x-user"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AffinityFrom {
    /// The value of this cookie.
    Cookie(String),
    /// The value of this request header (case-insensitive name).
    Header(String),
}

impl AffinityFrom {
    /// Checks the name (a token of letters, digits, `-` and `_`); header names are kept
    /// lower-case.
    ///
    /// # Errors
    /// [`RouteError::Affinity`] for an empty, long or malformed name.
    pub fn validated(self) -> Result<Self, RouteError> {
        let name = match &self {
            Self::Cookie(n) | Self::Header(n) => n,
        };
        let ok = (1..=MAX_AFFINITY_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(RouteError::Affinity(name.clone()));
        }
        Ok(match self {
            Self::Header(n) => Self::Header(n.to_ascii_lowercase()),
            cookie => cookie,
        })
    }

    /// The key a request's `headers` carry here, if any (the first cookie of that name;
    /// the header's value when it is text).
    pub fn key_in(&self, headers: &http::HeaderMap) -> Option<String> {
        match self {
            Self::Header(name) => headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            Self::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim_matches('"').to_owned())
                .filter(|v| !v.is_empty()),
        }
    }
}

/// A route's host: an exact hostname or a `*.suffix` wildcard matching any host that ends
/// in `.suffix` (one or more labels). Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern(String);

fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HOST_LEN
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl HostPattern {
    /// Validates `s` (case-insensitively) as a hostname or `*.suffix`.
    ///
    /// # Errors
    /// [`RouteError::Host`] for anything else (ports, IP literals with brackets, empty
    /// labels, underscores, a bare `*`).
    pub fn new(s: &str) -> Result<Self, RouteError> {
        let lower = s.to_ascii_lowercase();
        let host = lower.strip_prefix("*.").unwrap_or(&lower);
        if valid_hostname(host) {
            Ok(Self(lower))
        } else {
            Err(RouteError::Host(s.to_owned()))
        }
    }

    /// The suffix a wildcard matches (without the leading `*.`), or `None` for an exact host.
    pub fn wildcard_suffix(&self) -> Option<&str> {
        self.0.strip_prefix("*.")
    }

    /// The pattern as written (lower-case).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostPattern {
    type Error = RouteError;
    fn try_from(s: String) -> Result<Self, RouteError> {
        Self::new(&s)
    }
}

impl From<HostPattern> for String {
    fn from(h: HostPattern) -> String {
        h.0
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A route's path prefix. It matches a request path on segment boundaries: `/api` matches
/// `/api` and `/api/x` but not `/apix`; `/` and any prefix ending in `/` match everything
/// under them. Never inside the reserved `/v1` space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Validates `s` as a path prefix.
    ///
    /// # Errors
    /// [`RouteError::Prefix`] when malformed, [`RouteError::Reserved`] under `/v1`.
    pub fn new(s: &str) -> Result<Self, RouteError> {
        let ok = s.starts_with('/')
            && s.len() <= MAX_PREFIX_LEN
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%'));
        if !ok {
            return Err(RouteError::Prefix(s.to_owned()));
        }
        if is_reserved_path(s) {
            return Err(RouteError::Reserved(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// Whether this prefix matches `path` (on segment boundaries, see the type docs).
    pub fn matches(&self, path: &str) -> bool {
        let p = self.0.as_str();
        match path.strip_prefix(p) {
            None => false,
            Some(rest) => p.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        }
    }

    /// The prefix as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `path` lies in the platform's reserved API space (`/v1` and below).
pub fn is_reserved_path(path: &str) -> bool {
    path.strip_prefix(RESERVED_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl TryFrom<String> for PathPrefix {
    type Error = RouteError;
    fn try_from(s: String) -> Result<Self, RouteError> {
        Self::new(&s)
    }
}

impl From<PathPrefix> for String {
    fn from(p: PathPrefix) -> String {
        p.0
    }
}

/// A route's identity: 16 hex digits derived from its (host, path prefix), so the pair is
/// unique by construction and the same pair always has the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RouteId(String);

impl RouteId {
    /// The id of the route at (`host`, `prefix`).
    pub fn of(host: &HostPattern, prefix: &PathPrefix) -> Self {
        let mut h = Sha256::new();
        h.update(host.as_str().as_bytes());
        // A separator that can appear in neither part keeps ("a", "/b") and ("a/", "b") apart.
        h.update(b"\n");
        h.update(prefix.as_str().as_bytes());
        Self(hex::encode(&h.finalize()[..8]))
    }

    /// Parses an id as shown by the API.
    ///
    /// # Errors
    /// A message for a person when `s` is not 16 lower-case hex digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("route id {s:?} must be 16 lower-case hex digits"))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RouteId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<RouteId> for String {
    fn from(id: RouteId) -> String {
        id.0
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A route as stored and distributed to POPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    /// Derived from (host, path prefix): 16 hex digits.
    #[schema(value_type = String, example = "3f2a9c0d1e4b5a67")]
    pub id: RouteId,
    /// The owner; the function runs as this tenant.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// The host requests must carry (`Host` header, port ignored): a hostname or
    /// `*.suffix`, lower-case.
    #[schema(value_type = String, example = "shop.example")]
    pub host: HostPattern,
    /// The path prefix requests must start with (segment boundaries; never under `/v1`).
    #[schema(value_type = String, example = "/api")]
    pub path_prefix: PathPrefix,
    /// The function to run.
    #[schema(value_type = String)]
    pub function: FunctionName,
    /// The version or alias to run; `None` is `$LATEST`. Kept as text (validated) so the
    /// JSON shape is the plain string the API takes.
    pub qualifier: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Where requests carry their affinity key, besides `x-strata-affinity`.
    #[serde(default)]
    pub affinity: Option<AffinityFrom>,
}

impl Route {
    /// Builds a validated route from API input.
    ///
    /// # Errors
    /// [`RouteError`] for an invalid host, prefix, function name or qualifier.
    pub fn new(
        tenant: TenantId,
        host: &str,
        path_prefix: &str,
        function: &str,
        qualifier: Option<&str>,
        created_at_ms: u64,
    ) -> Result<Self, RouteError> {
        let host = HostPattern::new(host)?;
        let path_prefix = PathPrefix::new(path_prefix)?;
        let function = FunctionName::new(function)?;
        let qualifier = match qualifier {
            None | Some("") => None,
            Some(q) => Some(q.parse::<Qualifier>()?.to_string()),
        };
        Ok(Self {
            id: RouteId::of(&host, &path_prefix),
            tenant,
            host,
            path_prefix,
            function,
            qualifier,
            created_at_ms,
            affinity: None,
        })
    }

    /// This route, taking requests' affinity keys from `affinity` too.
    ///
    /// # Errors
    /// [`RouteError::Affinity`] for an invalid name.
    pub fn with_affinity(mut self, affinity: Option<AffinityFrom>) -> Result<Self, RouteError> {
        self.affinity = affinity.map(AffinityFrom::validated).transpose()?;
        Ok(self)
    }

    /// The affinity key of a request with `headers` through this route:
    /// `x-strata-affinity` if present, else the route's cookie or header.
    pub fn affinity_key(
        &self,
        headers: &http::HeaderMap,
        explicit: Option<&str>,
    ) -> Option<String> {
        explicit
            .map(str::to_owned)
            .or_else(|| self.affinity.as_ref().and_then(|a| a.key_in(headers)))
    }

    /// The qualifier to invoke (`$LATEST` when none was given).
    pub fn qualifier(&self) -> Qualifier {
        self.qualifier
            .as_deref()
            .and_then(|q| q.parse().ok())
            .unwrap_or_default()
    }
}

/// What an invocation through a route carries instead of a token: the route it matched
/// and that route's owner. Set only by a node's route handler (never parsed from a device
/// request); a region re-checks it against its own route registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteGrant {
    /// The matched route.
    pub route: RouteId,
    /// Its owner, as the matching node saw it.
    pub tenant: TenantId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_affinity_key_comes_from_its_cookie_or_header() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; sid=\"v-7\"".parse().expect("value"),
        );
        h.append(http::header::COOKIE, "sid=later".parse().expect("value"));
        h.insert("x-user", "u42".parse().expect("value"));
        let cookie = AffinityFrom::Cookie("sid".into())
            .validated()
            .expect("valid");
        assert_eq!(cookie.key_in(&h).as_deref(), Some("v-7"), "the first one");
        let header = AffinityFrom::Header("X-User".into())
            .validated()
            .expect("valid");
        assert_eq!(header, AffinityFrom::Header("x-user".into()));
        assert_eq!(header.key_in(&h).as_deref(), Some("u42"));
        assert_eq!(AffinityFrom::Cookie("none".into()).key_in(&h), None);
        for bad in ["", "a b", "sid;", &"x".repeat(65)] {
            assert!(
                AffinityFrom::Cookie(bad.into()).validated().is_err(),
                "{bad:?}"
            );
        }
    }

    fn tenant() -> TenantId {
        TenantId::new("t").expect("valid")
    }

    #[test]
    fn hosts_are_hostnames_or_wildcards() {
        assert_eq!(
            HostPattern::new("Shop.Example").map(|h| h.0),
            Ok("shop.example".into())
        );
        assert!(HostPattern::new("*.example.com").is_ok());
        for bad in [
            "", "*", "*.", "a..b", "a:80", "-a.b", "a_b.c", "[::1]", "*.*.x",
        ] {
            assert!(HostPattern::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefixes_start_with_a_slash_and_stay_out_of_v1() {
        assert!(PathPrefix::new("/").is_ok());
        assert!(PathPrefix::new("/api").is_ok());
        assert!(PathPrefix::new("/v10").is_ok());
        for bad in ["", "api", "/a b", "/a?x", "/a#", "/%2e"] {
            assert!(
                matches!(PathPrefix::new(bad), Err(RouteError::Prefix(_))),
                "{bad:?}"
            );
        }
        for reserved in ["/v1", "/v1/", "/v1/functions"] {
            assert!(
                matches!(PathPrefix::new(reserved), Err(RouteError::Reserved(_))),
                "{reserved:?}"
            );
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let p = PathPrefix::new("/api").expect("valid");
        assert!(p.matches("/api"));
        assert!(p.matches("/api/x"));
        assert!(!p.matches("/apix"));
        assert!(!p.matches("/ap"));
        let slash = PathPrefix::new("/static/").expect("valid");
        assert!(slash.matches("/static/a.css"));
        assert!(!slash.matches("/static"));
        assert!(PathPrefix::new("/").expect("valid").matches("/anything"));
    }

    #[test]
    fn the_id_is_derived_from_host_and_prefix() {
        let a = Route::new(tenant(), "a.example", "/x", "f", None, 0).expect("valid");
        let b = Route::new(tenant(), "A.example", "/x", "g", Some("live"), 1).expect("valid");
        let c = Route::new(tenant(), "a.example", "/y", "f", None, 0).expect("valid");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert!(RouteId::parse(a.id.as_str()).is_ok());
        assert!(RouteId::parse("xyz").is_err());
    }

    #[test]
    fn qualifiers_are_validated_and_default_to_latest() {
        let r = Route::new(tenant(), "a.example", "/", "f", None, 0).expect("valid");
        assert_eq!(r.qualifier(), Qualifier::Latest);
        let r = Route::new(tenant(), "a.example", "/", "f", Some("7"), 0).expect("valid");
        assert_eq!(r.qualifier().to_string(), "7");
        assert!(Route::new(tenant(), "a.example", "/", "f", Some("$bad"), 0).is_err());
        assert!(Route::new(tenant(), "a.example", "/", "F!", None, 0).is_err());
    }
}
