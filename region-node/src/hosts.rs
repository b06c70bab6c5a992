//! Host ownership rules, without I/O: how a route's host is normalised, which hosts a
//! tenant may use at all (no IP literals, no `localhost`, nothing at or above a public
//! suffix), and which tenant owns a host given the stored claims ([`HostOwnership`]).
//!
//! A claim on host `h` owns `h` and every name under it (`*.h`). Claims of different
//! tenants never overlap: a claim is refused when another tenant's claim is the same
//! host, above it or under it. The stored claims and their lifecycle (implicit through a
//! route, explicit, operator-assigned) live in [`crate::routes`].

use common::model::{ApiError, ErrorKind, HostPattern, TenantId};
use std::net::Ipv4Addr;

/// Key prefix of host claims in the routes bucket (route ids are hex, so never collide).
pub const CLAIM_PREFIX: &str = "~host/";

/// One host's owner, as stored under [`CLAIM_PREFIX`]`{host}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HostClaim {
    /// The host, normalised (lower-case ASCII, punycode, no trailing dot, no port).
    #[schema(example = "shop.example")]
    pub host: String,
    /// The owning tenant: it alone may route this host and the names under it.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// Claimed explicitly (`strata host claim`) or assigned by an operator: kept when the
    /// tenant's last route under it goes. `false`: taken by adding a route, released with
    /// the tenant's last route under it.
    pub explicit: bool,
    /// When the claim was made, milliseconds since the Unix epoch.
    pub claimed_at_ms: u64,
}

/// Normalises a host or `*.suffix` pattern: trims, drops one trailing dot, lower-cases,
/// converts internationalised names to punycode, and validates the result.
///
/// # Errors
/// 400 `bad_request` for a port, an IPv6 literal, a name IDNA refuses, or an invalid
/// hostname.
pub fn normalise(raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("host {raw:?}: {why}"));
    let trimmed = raw.trim();
    let (wild, name) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.contains(':') || name.contains('[') {
        return Err(bad(
            "ports and IPv6 literals are refused; give the bare hostname",
        ));
    }
    let name = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).map_err(|_| bad("not a valid internationalised name"))?
    };
    let pattern = if wild { format!("*.{name}") } else { name };
    HostPattern::new(&pattern).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(pattern)
}

/// The host a normalised pattern claims: itself, or a wildcard's suffix.
pub fn claim_root(pattern: &str) -> &str {
    pattern.strip_prefix("*.").unwrap_or(pattern)
}

/// Whether a claim on `owner` covers `host` (the same name or one under it).
pub fn covers(owner: &str, host: &str) -> bool {
    host == owner
        || host
            .strip_suffix(owner)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether `name` reads as an IP address: a dotted quad, or a last label of digits (or
/// `0x` hex), which resolvers and URL parsers treat as IPv4.
fn ip_like(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    name.parse::<Ipv4Addr>().is_ok()
        || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || last.starts_with("0x")
}

/// Checks that a tenant may claim a normalised pattern on its own: not an IP literal, not
/// `localhost` or under it, not a public suffix, and no wildcard at or above a public
/// suffix (`*.com`, `*.co.uk`, `*.github.io`). Unknown top-level names count as public
/// suffixes (the list's default `*` rule), so `*.example` is refused too. An operator
/// may assign any of these to a tenant.
///
/// # Errors
/// 400 `host_not_allowed`, naming the rule.
pub fn tenant_may_claim(pattern: &str) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        ApiError::new(
            ErrorKind::HostNotAllowed,
            format!("host {pattern}: {why}; an operator can assign it (strata host assign)"),
        )
    };
    let name = claim_root(pattern);
    if ip_like(name) {
        return Err(refuse("IP literals cannot be claimed by a tenant"));
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(refuse("localhost cannot be claimed by a tenant"));
    }
    if psl::domain(name.as_bytes()).is_none() {
        return Err(refuse(if pattern.starts_with("*.") {
            "a wildcard at or above a public suffix covers other owners' domains"
        } else {
            "a public suffix is not a registrable domain"
        }));
    }
    Ok(())
}

/// The stored claims, indexed for "who owns this host".
#[derive(Debug, Clone, Default)]
pub struct HostOwnership {
    claims: Vec<HostClaim>,
}

impl HostOwnership {
    /// Ownership over `claims`.
    pub fn new(mut claims: Vec<HostClaim>) -> Self {
        claims.sort_by(|a, b| a.host.cmp(&b.host));
        Self { claims }
    }

    /// The tenant owning `host` (normalised, no wildcard): the owner of the claim on it or
    /// the nearest one above it. This is the check TLS certificate issuance uses.
    pub fn owner_of(&self, host: &str) -> Option<&TenantId> {
        self.nearest(host).map(|c| &c.tenant)
    }

    /// The claim that decides `host`'s owner: the one on it or the nearest above it.
    pub fn nearest(&self, host: &str) -> Option<&HostClaim> {
        self.claims
            .iter()
            .filter(|c| covers(&c.host, host))
            .max_by_key(|c| c.host.len())
    }

    /// Every claim, by host.
    pub fn claims(&self) -> &[HostClaim] {
        &self.claims
    }

    /// The claim exactly on `host`.
    pub fn claim(&self, host: &str) -> Option<&HostClaim> {
        self.claims.iter().find(|c| c.host == host)
    }

    /// Whether `tenant` may route `pattern`: it owns the pattern's claim root.
    pub fn routable_by(&self, tenant: &TenantId, pattern: &str) -> bool {
        self.owner_of(claim_root(pattern)) == Some(tenant)
    }

    /// Refuses a claim on `host` by `tenant` when another tenant's claim is the same host,
    /// above it or under it.
    ///
    /// # Errors
    /// 409 `host_owned`, naming the conflicting host (not its owner).
    pub fn check_claim(&self, tenant: &TenantId, host: &str) -> Result<(), ApiError> {
        match self
            .claims
            .iter()
            .find(|c| c.tenant != *tenant && (covers(&c.host, host) || covers(host, &c.host)))
        {
            None => Ok(()),
            Some(c) if covers(&c.host, host) => Err(ApiError::new(
                ErrorKind::HostOwned,
                format!(
                    "host {host} belongs to another tenant (claim on {})",
                    c.host
                ),
            )),
            Some(c) => Err(ApiError::new(
                ErrorKind::HostOwned,
                format!(
                    "host {host} covers {}, which belongs to another tenant",
                    c.host
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(host: &str, tenant: &str) -> HostClaim {
        HostClaim {
            host: host.into(),
            tenant: TenantId::new(tenant).expect("valid"),
            explicit: false,
            claimed_at_ms: 0,
        }
    }

    #[test]
    fn hosts_are_normalised_before_any_comparison() {
        for (raw, want) in [
            ("SHOP.EXAMPLE.", "shop.example"),
            (" Shop.Example ", "shop.example"),
            ("*.Shop.Example.", "*.shop.example"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("*.BÜCHER.example", "*.xn--bcher-kva.example"),
        ] {
            assert_eq!(normalise(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "shop.example:443",
            "[::1]",
            "::1",
            "a..b",
            "*",
            "*.",
            "a_b.c",
            "",
        ] {
            let err = normalise(bad).expect_err(bad);
            assert_eq!(err.kind, ErrorKind::BadRequest, "{bad}");
        }
    }

    #[test]
    fn tenants_cannot_claim_ips_localhost_or_public_suffixes() {
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "1.2.3",
            "0x7f.1",
            "localhost",
            "api.localhost",
            "*.localhost",
            "*.com",
            "*.co.uk",
            "*.github.io",
            "*.example",
            "com",
            "co.uk",
            "github.io",
        ] {
            let err = tenant_may_claim(bad).expect_err(bad);
            assert_eq!(err.kind, ErrorKind::HostNotAllowed, "{bad}");
        }
        for ok in [
            "shop.example",
            "*.shop.example",
            "example.com",
            "*.example.com",
            "me.github.io",
            "*.me.github.io",
            "a.b.co.uk",
            "x1.example",
        ] {
            assert_eq!(tenant_may_claim(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_claim_covers_the_host_and_names_under_it_only() {
        assert!(covers("shop.example", "shop.example"));
        assert!(covers("shop.example", "a.b.shop.example"));
        assert!(!covers("shop.example", "myshop.example"));
        assert!(!covers("shop.example", "example"));
        assert_eq!(claim_root("*.shop.example"), "shop.example");
    }

    #[test]
    fn the_nearest_claim_owns_and_claims_never_overlap_across_tenants() {
        let own = HostOwnership::new(vec![claim("shop.example", "a"), claim("b.example", "b")]);
        let a = TenantId::new("a").expect("valid");
        let b = TenantId::new("b").expect("valid");
        assert_eq!(own.owner_of("x.shop.example"), Some(&a));
        assert_eq!(own.owner_of("myshop.example"), None);
        assert!(own.routable_by(&a, "*.shop.example"));
        assert!(!own.routable_by(&b, "shop.example"));
        for taken in ["shop.example", "x.shop.example"] {
            let err = own.check_claim(&b, taken).expect_err(taken);
            assert_eq!(err.kind, ErrorKind::HostOwned);
        }
        // A parent of another tenant's host would cover it.
        let a_com = HostOwnership::new(vec![claim("shop.example.com", "a")]);
        let err = a_com.check_claim(&b, "example.com").expect_err("covers");
        assert_eq!(err.kind, ErrorKind::HostOwned);
        assert_eq!(own.check_claim(&a, "x.shop.example"), Ok(()));
        assert_eq!(own.check_claim(&b, "other.example"), Ok(()));
    }
}
