//! The route registry: tenant-owned HTTP routes over the [`Store`], and the in-memory
//! [`RouteTable`] the region matches device requests against and hands to POPs.
//!
//! A route is stored under its id, which is derived from (host, path prefix), so "this
//! pair is already taken, by any tenant" is one conditional write (409 for the loser). The
//! table has a revision (`~revision` in the same bucket) bumped after every change and at
//! start-up, so a POP holding an older revision refetches, and a crash between a route
//! write and its revision bump is healed by the next start.
//!
//! Hosts are owned (see [`crate::hosts`]): a route's host must belong to its tenant, and
//! adding one under an unowned host claims it implicitly; the claims are stored in the
//! same bucket under `~host/{host}` (so both store backends carry them unchanged) and the
//! table only ever holds routes whose tenant owns their host. Explicit claims and operator
//! assignment are in `routes/claims.rs`.
//!
//! Store calls block (they wait for an fsync): async callers run [`Routes::create`] and
//! [`Routes::delete`] on the blocking pool. Reads are served from memory.

mod claims;

use crate::hosts::{self, CLAIM_PREFIX, HostClaim, HostOwnership, claim_root, covers};
use crate::registry::Registry;
use crate::store::{Bucket, Expect, StoreError};
use common::edge::{RouteSource, RouteTable};
use common::model::{ApiError, ErrorKind, FunctionName, Route, RouteGrant, RouteId, TenantId};
use std::sync::{Arc, Mutex, RwLock};

const REVISION_KEY: &str = "~revision";

/// What a tenant asks for when it adds a route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoute {
    /// Exact hostname or `*.suffix`.
    #[schema(example = "shop.example")]
    pub host: String,
    /// Starts with `/`; not under `/v1`.
    #[schema(example = "/api")]
    pub path_prefix: String,
    /// One of the tenant's functions.
    pub function: String,
    /// A version or alias; `$LATEST` when absent.
    pub qualifier: Option<String>,
    /// Where requests carry their affinity key besides `x-strata-affinity`:
    /// `{"cookie": "sid"}` or `{"header": "x-user"}`.
    #[serde(default)]
    pub affinity: Option<common::model::AffinityFrom>,
}

/// Tenant-owned routes and the current table.
#[derive(Debug)]
pub struct Routes {
    registry: Arc<Registry>,
    table: RwLock<Arc<RouteTable>>,
    hosts: RwLock<Arc<HostOwnership>>,
    /// Serialises changes so each rebuilt table reflects every write before it.
    writing: Mutex<()>,
}

fn decode(bytes: &[u8]) -> Result<Route, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("corrupt route: {e}")))
}

fn decode_claim(bytes: &[u8]) -> Result<HostClaim, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("corrupt claim: {e}")))
}

fn claim_key(host: &str) -> String {
    format!("{CLAIM_PREFIX}{host}")
}

/// Every stored route and host claim.
type Stored = (Vec<Route>, Vec<HostClaim>);

impl Routes {
    /// Loads the routes from `registry`'s store and bumps the table revision.
    ///
    /// # Errors
    /// 500 when the store fails or holds a corrupt route.
    pub fn open(registry: Arc<Registry>) -> Result<Self, ApiError> {
        let routes = Self {
            registry,
            table: RwLock::new(Arc::new(RouteTable::default())),
            hosts: RwLock::new(Arc::new(HostOwnership::default())),
            writing: Mutex::new(()),
        };
        routes.claim_unowned()?;
        routes.changed()?;
        Ok(routes)
    }

    /// Every stored route and claim.
    fn stored(&self) -> Result<Stored, ApiError> {
        let (mut routes, mut claims) = (Vec::new(), Vec::new());
        for (key, entry) in self.registry.store().list(Bucket::Routes, "")? {
            if key.starts_with(CLAIM_PREFIX) {
                claims.push(decode_claim(&entry.value)?);
            } else if key != REVISION_KEY {
                routes.push(decode(&entry.value)?);
            }
        }
        Ok((routes, claims))
    }

    /// Host ownership as the store has it now, not as this region last loaded it: regions
    /// sharing a store (JetStream) check a claim against each other's latest writes.
    /// Read under the write lock, just before writing; two regions writing overlapping
    /// (not identical) hosts in the same instant can still both succeed, identical hosts
    /// cannot (the claim's write is conditional).
    fn stored_hosts(&self) -> Result<HostOwnership, ApiError> {
        Ok(HostOwnership::new(self.stored()?.1))
    }

    /// Gives routes stored before host ownership existed an implicit claim, oldest route
    /// first; a route whose host another tenant got first stays stored but unserved.
    fn claim_unowned(&self) -> Result<(), ApiError> {
        let (mut routes, claims) = self.stored()?;
        routes.sort_by_key(|r| r.created_at_ms);
        let mut own = HostOwnership::new(claims);
        for r in routes {
            let root = claim_root(r.host.as_str());
            if own.owner_of(root).is_some() {
                if !own.routable_by(&r.tenant, r.host.as_str()) {
                    tracing::warn!(route = %r.id, host = %r.host, "route's host belongs to another tenant; not served");
                }
                continue;
            }
            if own.check_claim(&r.tenant, root).is_err() {
                tracing::warn!(route = %r.id, host = %r.host, "route's host covers another tenant's host; not served");
                continue;
            }
            let claim = HostClaim {
                host: root.to_owned(),
                tenant: r.tenant.clone(),
                explicit: false,
                claimed_at_ms: r.created_at_ms,
            };
            self.put_claim(&claim, Expect::Absent)?;
            let mut all = own.claims().to_vec();
            all.push(claim);
            own = HostOwnership::new(all);
        }
        Ok(())
    }

    fn put_claim(&self, claim: &HostClaim, expect: Expect) -> Result<(), ApiError> {
        let value = serde_json::to_vec(claim)
            .map_err(|e| ApiError::internal(format!("encoding claim: {e}")))?;
        self.registry
            .store()
            .put(Bucket::Routes, &claim_key(&claim.host), &value, expect)
            .map_err(|e| match e {
                StoreError::Conflict { .. } => ApiError::new(
                    ErrorKind::HostOwned,
                    format!("host {} was claimed meanwhile", claim.host),
                ),
                e => e.into(),
            })?;
        Ok(())
    }

    fn delete_claim(&self, host: &str) -> Result<(), ApiError> {
        self.registry
            .store()
            .delete(Bucket::Routes, &claim_key(host), Expect::Any)?;
        Ok(())
    }

    /// Bumps the revision and rebuilds the ownership and the table from the store; the
    /// table holds only routes whose tenant owns their host.
    fn changed(&self) -> Result<(), ApiError> {
        let store = self.registry.store();
        let revision = store.put(Bucket::Routes, REVISION_KEY, b"", Expect::Any)?;
        let (routes, claims) = self.stored()?;
        let own = HostOwnership::new(claims);
        let routes: Vec<Route> = routes
            .into_iter()
            .filter(|r| own.routable_by(&r.tenant, r.host.as_str()))
            .collect();
        *self.hosts.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(own);
        *self.table.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(RouteTable::new(revision, routes));
        Ok(())
    }

    /// Who owns which host, as of the last change.
    pub fn hosts(&self) -> Arc<HostOwnership> {
        Arc::clone(&self.hosts.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The tenant owning `host` (normalised, no wildcard), if any: the check TLS
    /// certificate issuance makes before serving a certificate for a tenant's host.
    pub fn owner_of(&self, host: &str) -> Option<TenantId> {
        self.hosts().owner_of(host).cloned()
    }

    /// Adds a route for `tenant`, claiming its host when nobody owns it.
    ///
    /// # Errors
    /// 400 for an invalid pattern or a function the tenant does not have;
    /// 400 `host_not_allowed` for a host a tenant may not claim; 409 `host_owned` when
    /// another tenant owns the host (or one it would cover); 409 when the (host, path
    /// prefix) pair is taken.
    pub fn create(&self, tenant: &TenantId, new: NewRoute) -> Result<Route, ApiError> {
        let host = hosts::normalise(&new.host)?;
        let route = Route::new(
            tenant.clone(),
            &host,
            &new.path_prefix,
            &new.function,
            new.qualifier.as_deref(),
            common::logs::now_ms(),
        )
        .and_then(|r| r.with_affinity(new.affinity))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        match self.registry.function(tenant, &route.function) {
            Ok(_) => {}
            Err(e) if e.is_missing() => {
                return Err(ApiError::bad_request(format!(
                    "function {} does not exist; deploy it before routing to it",
                    route.function
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let value = serde_json::to_vec(&route)
            .map_err(|e| ApiError::internal(format!("encoding route: {e}")))?;
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        // Under the write lock, so two creates cannot both take the last place.
        let have = self
            .table()
            .routes()
            .filter(|r| r.tenant == *tenant)
            .count();
        crate::quota::check(
            common::model::Quota::Routes,
            self.registry.quotas().routes,
            have as u64,
            1,
            "routes of this tenant",
        )?;
        let own = self.stored_hosts()?;
        let mut claimed = None;
        if !own.routable_by(tenant, route.host.as_str()) {
            let root = claim_root(route.host.as_str());
            hosts::tenant_may_claim(route.host.as_str())?;
            own.check_claim(tenant, root)?;
            let claim = HostClaim {
                host: root.to_owned(),
                tenant: tenant.clone(),
                explicit: false,
                claimed_at_ms: route.created_at_ms,
            };
            self.put_claim(&claim, Expect::Absent)?;
            claimed = Some(claim.host);
        }
        let written = self
            .registry
            .store()
            .put(Bucket::Routes, route.id.as_str(), &value, Expect::Absent)
            .map_err(|e| match e {
                StoreError::Conflict { .. } => ApiError::new(
                    ErrorKind::Conflict,
                    format!(
                        "host {} with path prefix {} is already routed; pick another pair",
                        route.host,
                        route.path_prefix.as_str()
                    ),
                ),
                e => e.into(),
            });
        if let (Err(_), Some(host)) = (&written, &claimed) {
            self.delete_claim(host)?;
        }
        written?;
        self.changed()?;
        Ok(route)
    }

    /// `tenant`'s routes, by host then prefix.
    pub fn list(&self, tenant: &TenantId) -> Vec<Route> {
        let mut out: Vec<Route> = self
            .table()
            .routes()
            .filter(|r| r.tenant == *tenant)
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.host, &a.path_prefix).cmp(&(&b.host, &b.path_prefix)));
        out
    }

    /// Deletes `tenant`'s route `id`.
    ///
    /// # Errors
    /// 404 when `tenant` has no such route (another tenant's route is not revealed).
    pub fn delete(&self, tenant: &TenantId, id: &RouteId) -> Result<(), ApiError> {
        let not_found = || ApiError::not_found(format!("route {id}"));
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let store = self.registry.store();
        let entry = store
            .get(Bucket::Routes, id.as_str())?
            .ok_or_else(not_found)?;
        if decode(&entry.value)?.tenant != *tenant {
            return Err(not_found());
        }
        store.delete(
            Bucket::Routes,
            id.as_str(),
            Expect::Revision(entry.revision),
        )?;
        self.release_unused(tenant)?;
        self.changed()
    }

    /// Deletes `tenant`'s implicit claims that no route of its own is under any more.
    fn release_unused(&self, tenant: &TenantId) -> Result<(), ApiError> {
        let (routes, claims) = self.stored()?;
        for c in claims.iter().filter(|c| c.tenant == *tenant && !c.explicit) {
            let used = routes
                .iter()
                .any(|r| r.tenant == *tenant && covers(&c.host, claim_root(r.host.as_str())));
            if !used {
                self.delete_claim(&c.host)?;
            }
        }
        Ok(())
    }

    /// The tenant an invocation through `grant` runs as, after checking that the route
    /// still exists, belongs to that tenant and targets `function`; `None` when the route
    /// is gone or does not match (a POP's table may be stale).
    pub fn tenant_for(&self, grant: &RouteGrant, function: &FunctionName) -> Option<TenantId> {
        let table = self.table();
        table
            .routes()
            .find(|r| r.id == grant.route)
            .filter(|r| r.tenant == grant.tenant && r.function == *function)
            .map(|r| r.tenant.clone())
    }

    /// The table's revision and, when it differs from `since`, every route.
    pub fn fetch(&self, since: u64) -> (u64, Option<Vec<Route>>) {
        let table = self.table();
        let revision = table.revision();
        let routes = (revision != since).then(|| table.routes().cloned().collect());
        (revision, routes)
    }
}

impl RouteSource for Routes {
    fn table(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::store::Store;
    use common::model::FunctionConfig;

    pub(super) fn setup() -> (tempfile::TempDir, Arc<Registry>, Routes) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("r.redb")).expect("opens");
        let registry = Arc::new(Registry::new(store));
        for t in ["a", "b"] {
            let t = TenantId::new(t).expect("valid");
            registry.create_tenant(t.clone(), 512).expect("tenant");
            registry
                .deploy(
                    &t,
                    &FunctionName::new("f").expect("valid"),
                    FunctionConfig::default(),
                    b"\0asm",
                    None,
                )
                .expect("deploy");
        }
        let routes = Routes::open(Arc::clone(&registry)).expect("opens");
        (dir, registry, routes)
    }

    pub(super) fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("valid")
    }

    pub(super) fn new(host: &str, prefix: &str, function: &str) -> NewRoute {
        NewRoute {
            host: host.into(),
            path_prefix: prefix.into(),
            function: function.into(),
            qualifier: None,
            affinity: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn a_taken_pair_conflicts_for_its_owner_and_the_host_for_others() {
        let (_d, _r, routes) = setup();
        routes
            .create(&t("a"), new("x.example", "/", "f"))
            .expect("created");
        let err = routes
            .create(&t("a"), new("x.example", "/", "f"))
            .expect_err("taken");
        assert_eq!(err.kind, ErrorKind::Conflict);
        let err = routes
            .create(&t("b"), new("X.example", "/", "f"))
            .expect_err("owned");
        assert_eq!(err.kind, ErrorKind::HostOwned);
        assert_eq!(routes.list(&t("b")), []);
    }

    #[test]
    fn bad_patterns_and_missing_functions_are_refused_and_change_nothing() {
        let (_d, _r, routes) = setup();
        let before = routes.fetch(0).0;
        for bad in [
            new("x.example", "api", "f"),
            new("x:80", "/", "f"),
            new("x.example", "/v1/functions", "f"),
            new("x.example", "/", "missing"),
        ] {
            let err = routes.create(&t("a"), bad).expect_err("refused");
            assert_eq!(err.kind, ErrorKind::BadRequest, "{err:?}");
        }
        assert_eq!(routes.fetch(before), (before, None));
    }

    #[test]
    fn only_the_owner_deletes_and_revisions_move() {
        let (_d, _r, routes) = setup();
        let r = routes
            .create(&t("a"), new("x.example", "/", "f"))
            .expect("created");
        let (rev, all) = routes.fetch(0);
        assert_eq!(all.map(|v| v.len()), Some(1));
        let err = routes.delete(&t("b"), &r.id).expect_err("not theirs");
        assert_eq!(err.kind, ErrorKind::NotFound);
        routes.delete(&t("a"), &r.id).expect("deleted");
        let (rev2, all) = routes.fetch(rev);
        assert!(rev2 > rev);
        assert_eq!(all, Some(vec![]));
    }

    #[test]
    fn routes_survive_a_restart() {
        let (_d, registry, routes) = setup();
        routes
            .create(&t("a"), new("x.example", "/api", "f"))
            .expect("created");
        let rev = routes.fetch(0).0;
        drop(routes);
        let reopened = Routes::open(registry).expect("reopens");
        let (rev2, all) = reopened.fetch(rev);
        assert!(rev2 > rev);
        assert_eq!(all.map(|v| v.len()), Some(1));
        assert!(reopened.table().lookup("x.example", "/api/x").is_some());
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn a_route_claims_its_host_until_the_last_route_goes_and_survives_a_restart() {
        let (_d, registry, routes) = setup();
        let r = routes
            .create(&t("a"), new("shop.example", "/", "f"))
            .expect("created");
        for steal in [
            new("SHOP.EXAMPLE.", "/checkout", "f"),
            new("x.shop.example", "/", "f"),
            new("*.shop.example", "/", "f"),
        ] {
            let err = routes.create(&t("b"), steal).expect_err("owned");
            assert_eq!(err.kind, ErrorKind::HostOwned, "{err:?}");
        }
        drop(routes);
        let routes = Routes::open(Arc::clone(&registry)).expect("reopens");
        assert_eq!(routes.owner_of("a.shop.example"), Some(t("a")));
        let err = routes
            .create(&t("b"), new("shop.example", "/b", "f"))
            .expect_err("still owned");
        assert_eq!(err.kind, ErrorKind::HostOwned);
        routes.delete(&t("a"), &r.id).expect("deleted");
        assert_eq!(routes.owner_of("shop.example"), None);
        routes
            .create(&t("b"), new("shop.example", "/b", "f"))
            .expect("free again");
    }

    #[test]
    fn two_regions_on_one_store_never_both_own_a_host() {
        // Two regions sharing a store, each with its own loaded view: the second has not
        // seen the first's claims when it writes.
        let (_d, registry, first) = setup();
        let second = Routes::open(Arc::clone(&registry)).expect("opens");
        first.claim(&t("a"), "shop.example").expect("claimed");
        let err = second
            .claim(&t("b"), "shop.example")
            .expect_err("same host");
        assert_eq!(err.kind, ErrorKind::HostOwned, "{err:?}");
        let err = second
            .claim(&t("b"), "eu.shop.example")
            .expect_err("under it");
        assert_eq!(err.kind, ErrorKind::HostOwned, "{err:?}");
        let err = second
            .create(&t("b"), new("shop.example", "/checkout", "f"))
            .expect_err("a route under it");
        assert_eq!(err.kind, ErrorKind::HostOwned, "{err:?}");
        let err = second
            .assign("shop.example", &t("b"))
            .expect_err("the operator must release it first");
        assert_eq!(err.kind, ErrorKind::HostOwned, "{err:?}");
        // The first region's claim is intact in the store.
        let reopened = Routes::open(registry).expect("reopens");
        assert_eq!(reopened.hosts().owner_of("shop.example"), Some(&t("a")));
    }

    #[test]
    fn explicit_claims_stay_and_operator_release_removes_the_routes() {
        let (_d, _r, routes) = setup();
        routes.claim(&t("a"), "Shop.Example").expect("claimed");
        let r = routes
            .create(&t("a"), new("*.shop.example", "/", "f"))
            .expect("created");
        routes.delete(&t("a"), &r.id).expect("deleted");
        assert_eq!(routes.owner_of("x.shop.example"), Some(t("a")));
        assert_eq!(
            routes
                .release(Some(&t("b")), "shop.example")
                .map_err(|e| e.kind),
            Err(ErrorKind::NotFound)
        );
        let err = routes.assign("shop.example", &t("b")).expect_err("owned");
        assert_eq!(err.kind, ErrorKind::HostOwned);
        routes
            .create(&t("a"), new("shop.example", "/", "f"))
            .expect("created");
        routes.release(None, "shop.example").expect("released");
        assert_eq!(routes.owner_of("shop.example"), None);
        assert!(routes.list(&t("a")).is_empty());
        // Operators may hand out what tenants may not claim.
        let err = routes.claim(&t("b"), "127.0.0.1").expect_err("ip");
        assert_eq!(err.kind, ErrorKind::HostNotAllowed);
        routes.assign("127.0.0.1", &t("b")).expect("assigned");
        routes
            .create(&t("b"), new("127.0.0.1", "/", "f"))
            .expect("routable once assigned");
    }

    #[test]
    fn routes_stored_before_ownership_are_claimed_oldest_first() {
        let (_d, registry, routes) = setup();
        drop(routes);
        let store = registry.store();
        for (tenant, at) in [("b", 2), ("a", 1)] {
            let r = Route::new(
                t(tenant),
                "old.example",
                &format!("/{tenant}"),
                "f",
                None,
                at,
            )
            .expect("valid");
            let v = serde_json::to_vec(&r).expect("json");
            store
                .put(Bucket::Routes, r.id.as_str(), &v, Expect::Absent)
                .expect("put");
        }
        let routes = Routes::open(registry).expect("opens");
        assert_eq!(routes.owner_of("old.example"), Some(t("a")));
        assert!(routes.table().lookup("old.example", "/b").is_none());
        assert!(routes.table().lookup("old.example", "/a").is_some());
    }
}
