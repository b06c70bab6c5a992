//! The route registry: tenant-owned HTTP routes over the [`Store`], and the in-memory
//! [`RouteTable`] the region matches device requests against and hands to POPs.
//!
//! A route is stored under its id, which is derived from (host, path prefix), so "this
//! pair is already taken, by any tenant" is one conditional write (409 for the loser). The
//! table has a revision (`~revision` in the same bucket) bumped after every change and at
//! start-up, so a POP holding an older revision refetches, and a crash between a route
//! write and its revision bump is healed by the next start.
//!
//! Store calls block (they wait for an fsync): async callers run [`Routes::create`] and
//! [`Routes::delete`] on the blocking pool. Reads are served from memory.

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
}

/// Tenant-owned routes and the current table.
#[derive(Debug)]
pub struct Routes {
    registry: Arc<Registry>,
    table: RwLock<Arc<RouteTable>>,
    /// Serialises changes so each rebuilt table reflects every write before it.
    writing: Mutex<()>,
}

fn decode(bytes: &[u8]) -> Result<Route, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("corrupt route: {e}")))
}

impl Routes {
    /// Loads the routes from `registry`'s store and bumps the table revision.
    ///
    /// # Errors
    /// 500 when the store fails or holds a corrupt route.
    pub fn open(registry: Arc<Registry>) -> Result<Self, ApiError> {
        let routes = Self {
            registry,
            table: RwLock::new(Arc::new(RouteTable::default())),
            writing: Mutex::new(()),
        };
        routes.changed()?;
        Ok(routes)
    }

    /// Bumps the revision and rebuilds the table from the store.
    fn changed(&self) -> Result<(), ApiError> {
        let store = self.registry.store();
        let revision = store.put(Bucket::Routes, REVISION_KEY, b"", Expect::Any)?;
        let routes = store
            .list(Bucket::Routes, "")?
            .into_iter()
            .filter(|(k, _)| k != REVISION_KEY)
            .map(|(_, e)| decode(&e.value))
            .collect::<Result<Vec<_>, _>>()?;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(RouteTable::new(revision, routes));
        Ok(())
    }

    /// Adds a route for `tenant`.
    ///
    /// # Errors
    /// 400 for an invalid pattern or a function the tenant does not have; 409 when the
    /// (host, path prefix) pair is taken by any tenant; 409 `quota_exceeded` past the
    /// tenant's `routes` quota.
    pub fn create(&self, tenant: &TenantId, new: NewRoute) -> Result<Route, ApiError> {
        let route = Route::new(
            tenant.clone(),
            &new.host,
            &new.path_prefix,
            &new.function,
            new.qualifier.as_deref(),
            common::logs::now_ms(),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        match self.registry.function(tenant, &route.function) {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(ApiError::bad_request(format!(
                    "function {} does not exist; deploy it before routing to it",
                    route.function
                )));
            }
            Err(e) => return Err(e),
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
        self.registry
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
            })?;
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
        self.changed()
    }

    /// The tenant an invocation through `grant` runs as, after checking that the route
    /// still exists, belongs to that tenant and targets `function`.
    ///
    /// # Errors
    /// 404 when the route is gone or does not match (a POP's table may be stale).
    pub fn tenant_for(
        &self,
        grant: &RouteGrant,
        function: &FunctionName,
    ) -> Result<TenantId, ApiError> {
        let table = self.table();
        table
            .routes()
            .find(|r| r.id == grant.route)
            .filter(|r| r.tenant == grant.tenant && r.function == *function)
            .map(|r| r.tenant.clone())
            .ok_or_else(|| ApiError::not_found(format!("route {} no longer exists", grant.route)))
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
mod tests {
    use super::*;
    use crate::store::Store;
    use common::model::FunctionConfig;

    fn setup() -> (tempfile::TempDir, Arc<Registry>, Routes) {
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

    fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("valid")
    }

    fn new(host: &str, prefix: &str, function: &str) -> NewRoute {
        NewRoute {
            host: host.into(),
            path_prefix: prefix.into(),
            function: function.into(),
            qualifier: None,
        }
    }

    #[test]
    fn a_taken_pair_conflicts_across_tenants() {
        let (_d, _r, routes) = setup();
        routes
            .create(&t("a"), new("x.example", "/", "f"))
            .expect("created");
        let err = routes
            .create(&t("b"), new("X.example", "/", "f"))
            .expect_err("taken");
        assert_eq!(err.kind, ErrorKind::Conflict);
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
