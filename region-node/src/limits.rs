//! The region owns every tenant's concurrency budget: it admits its own executions
//! (including invocations POPs forward, which are charged here and never to the POP's
//! lease), grants POPs leases of slots they run locally, takes returned slots back, and
//! reclaims the leases of POPs that stop renewing. The arithmetic lives in
//! [`common::policy::concurrency::Budget`]; this module adds the clock, the per-tenant
//! configuration and the bound on tracked tenants.
//!
//! Invariant: for each tenant, Σ(slots leased to POPs) + invocations running at the region
//! ≤ the tenant's current limit at every grant and admission. A POP stops drawing from a
//! lease `lease_ttl` after it asked for its renewal; the region keeps counting it for a
//! further `lease_grace` (longer than any invocation may run), so a lease that vanishes
//! with its POP is reclaimed only after everything drawn from it has ended.
//!
//! Operator overrides of a tenant's settings are durable: `limits/durable.rs` writes them
//! to the store before they apply, loads them at start-up and follows other regions'
//! writes.

mod durable;
mod rebalance;
mod refusal;

pub use refusal::LimitRefusal;

use crate::store::Store;
use common::clock::{Clock, SystemClock};
use common::model::{ApiError, FunctionKey, TenantId};
use common::policy::concurrency::{Budget, Charge, LimitConfig};
use common::policy::lease;
use common::policy::rate::RateLimits;
use common::policy::split::{RegionSplit, SplitError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A tenant's concurrency limit settings, as configured or overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// The limit never grows past this. Default 1000.
    pub hard_max: u32,
    /// Where the limit starts and what it decays back to. Default 100.
    pub burst: u32,
    /// Growth (and decay) per interval. Default 10.
    pub step: u32,
    /// How often the limit may change, in milliseconds. Default 1000.
    pub interval_ms: u64,
    /// Requests per second of the tenant this region accepts (bursts up to the same
    /// number); more get 429. Default none: unlimited.
    pub rate_limit_rps: Option<u32>,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            hard_max: 1000,
            burst: 100,
            step: 10,
            interval_ms: 1000,
            rate_limit_rps: None,
        }
    }
}

impl TenantLimits {
    /// Checks the settings.
    ///
    /// # Errors
    /// 400 when `hard_max`, `burst` or `interval_ms` is zero or `burst` exceeds `hard_max`.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.hard_max == 0
            || self.burst == 0
            || self.interval_ms == 0
            || self.rate_limit_rps == Some(0)
        {
            return Err(ApiError::bad_request(
                "hard_max, burst, interval_ms and rate_limit_rps must be at least 1",
            ));
        }
        if self.burst > self.hard_max {
            return Err(ApiError::bad_request("burst must not exceed hard_max"));
        }
        Ok(())
    }

    /// The whole limit, before any split among regions.
    fn whole(self) -> LimitConfig {
        LimitConfig {
            hard_max: self.hard_max,
            burst: self.burst,
            step: self.step,
            interval: Duration::from_millis(self.interval_ms),
        }
    }

    /// The budget's settings at this region: `share` of the hard maximum when the
    /// regions rebalanced it, otherwise the static `split`.
    fn policy(self, split: &RegionSplit, share: Option<u32>) -> LimitConfig {
        match share {
            Some(share) => RegionSplit::config_for_share(self.whole(), share),
            None => split.config(self.whole()),
        }
    }
}

/// The region's limits configuration (`[limits]` in the region TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Every tenant's settings unless overridden.
    pub tenant: TenantLimits,
    /// How long a POP may draw from a lease after asking for it or its renewal, in
    /// milliseconds. Default 3000.
    pub lease_ttl_ms: u64,
    /// How much longer the region counts a lease that was not renewed before reclaiming
    /// it; must exceed the longest invocation. Default 60000.
    pub lease_grace_ms: u64,
    /// Tenants whose books are kept at once; beyond it, invocations of new tenants get 429
    /// until idle books are dropped. Default 65536. Also bounds the rate limiters kept.
    pub max_tenants: usize,
    /// Regions that admit the same tenants (each with its own books: separate stores).
    /// Each takes its share of every tenant's `hard_max`, `burst` and `step`
    /// (`common::policy::split::RegionSplit`), so together they admit at most the limit.
    /// Default 1: the whole limit here.
    pub regions: u32,
    /// This region's index among `regions`, from 0 (the first `hard_max % regions`
    /// regions take one slot more). Default 0.
    pub region_index: u32,
    /// How often, in milliseconds, regions sharing one JetStream store rebalance each
    /// tenant's split by observed demand (`common::policy::split::Allocation`, kept in the
    /// store's `Shares` bucket). Default 0: the static split. Only valid with the
    /// JetStream store and every one of the `regions` on it.
    pub rebalance_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            tenant: TenantLimits::default(),
            lease_ttl_ms: 3000,
            lease_grace_ms: 60_000,
            max_tenants: 65_536,
            regions: 1,
            region_index: 0,
            rebalance_ms: 0,
        }
    }
}

impl LimitsConfig {
    /// This region's part of every tenant's limit.
    ///
    /// # Errors
    /// [`SplitError`] for zero regions or an index not below them.
    pub fn split(&self) -> Result<RegionSplit, SplitError> {
        RegionSplit::new(self.regions, self.region_index)
    }
}

/// One tenant's state as shown by the capacity view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: TenantId,
    /// Slots leased to POPs plus invocations running at the region.
    pub charged: u32,
    /// Of those, leased to POPs.
    pub leased: u32,
    /// The current limit.
    pub limit: u32,
    /// The hard maximum.
    pub hard_max: u32,
}

const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Books {
    budgets: HashMap<TenantId, Budget>,
    /// Operator overrides; at most `max_tenants` (a further tenant's override is refused).
    overrides: HashMap<TenantId, TenantLimits>,
    /// This region's rebalanced share of tenants' hard maximum (absent: the static split).
    shares: HashMap<TenantId, u32>,
}

/// The region's budget owner.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    /// This region's share of every tenant's limit (an invalid split in the config
    /// counts as one region; start-up refuses it first).
    split: RegionSplit,
    books: Mutex<Books>,
    /// Tenant (`t/<tenant>`) and function (`f/<tenant>/<name>`) request rates.
    rates: Mutex<RateLimits>,
    /// Where overrides are kept; `None` keeps them in memory only.
    store: Option<Store>,
    /// Serialises override changes: each store write or re-read and its application in
    /// memory are one step, so memory ends at what the store holds last.
    writing: Mutex<()>,
    /// The store revision the overrides were loaded at: where following starts.
    loaded_at: u64,
    /// Where the books read the time (intervals, lease expiry, rates).
    clock: Arc<dyn Clock>,
}

/// An admitted invocation's slot; returned when dropped.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    tenant: TenantId,
    function: String,
    charge: Charge,
    /// When it was admitted: how long it held its slot is what a 429's `retry-after`
    /// learns from.
    admitted: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let held = self
            .limits
            .clock
            .now()
            .saturating_duration_since(self.admitted);
        let mut books = self.limits.lock();
        if let Some(b) = books.budgets.get_mut(&self.tenant) {
            b.release(&self.function, self.charge, held);
        }
    }
}

impl Limits {
    /// A budget owner with `config` whose overrides live in memory only (a restart
    /// forgets them); [`Limits::open`] makes them durable.
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            split: config.split().unwrap_or_default(),
            books: Mutex::new(Books {
                budgets: HashMap::new(),
                overrides: HashMap::new(),
                shares: HashMap::new(),
            }),
            rates: Mutex::new(RateLimits::new(Instant::now(), config.max_tenants)),
            store: None,
            writing: Mutex::new(()),
            loaded_at: 0,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same books reading the time from `clock` (a test's manual clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.rates = Mutex::new(RateLimits::new(clock.now(), self.config.max_tenants));
        self.clock = clock;
        self
    }

    /// Counts one request of `function` against its tenant's rate and its own
    /// `function_rps`.
    ///
    /// # Errors
    /// [`LimitRefusal::TenantRate`] or [`LimitRefusal::FunctionRate`] when either is
    /// exceeded.
    pub fn check_rate(
        &self,
        function: &FunctionKey,
        function_rps: Option<u32>,
    ) -> Result<(), LimitRefusal> {
        let tenant_rps = self.settings(&function.tenant).rate_limit_rps;
        let now = self.clock.now();
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rps) = tenant_rps.and_then(NonZeroU32::new) {
            let key = format!("t/{}", function.tenant);
            rates
                .check(now, &key, rps)
                .map_err(|r| LimitRefusal::TenantRate {
                    tenant: function.tenant.clone(),
                    rps,
                    retry_after: r.retry_after,
                })?;
        }
        if let Some(rps) = function_rps.and_then(NonZeroU32::new) {
            let key = format!("f/{function}");
            rates
                .check(now, &key, rps)
                .map_err(|r| LimitRefusal::FunctionRate {
                    function: function.clone(),
                    rps,
                    retry_after: r.retry_after,
                })?;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a POP may draw from a lease it just asked for.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.config.lease_ttl_ms)
    }

    /// The settings in force for `tenant`.
    pub fn settings(&self, tenant: &TenantId) -> TenantLimits {
        self.lock()
            .overrides
            .get(tenant)
            .copied()
            .unwrap_or(self.config.tenant)
    }

    /// Sets `tenant`'s override in memory (`None`: back to the defaults), reconfiguring
    /// its books at once. Callers hold `writing` and have checked the bound.
    fn apply(&self, tenant: &TenantId, limits: Option<TenantLimits>) {
        let mut books = self.lock();
        let before = match limits {
            Some(l) => books.overrides.insert(tenant.clone(), l),
            None => books.overrides.remove(tenant),
        };
        let effective = limits.unwrap_or(self.config.tenant);
        if before.unwrap_or(self.config.tenant).hard_max != effective.hard_max {
            // A new total: back to the static split until the regions rebalance it.
            books.shares.remove(tenant);
        }
        let share = books.shares.get(tenant).copied();
        if let Some(b) = books.budgets.get_mut(tenant) {
            b.limit().reconfigure(effective.policy(&self.split, share));
        }
    }

    /// Whether an override for `tenant` would exceed the bound of `max_tenants` overrides.
    fn overrides_full(&self, tenant: &TenantId) -> bool {
        let books = self.lock();
        !books.overrides.contains_key(tenant) && books.overrides.len() >= self.config.max_tenants
    }

    /// Runs `f` on `tenant`'s books, creating them if there is room.
    fn with_budget<T>(
        &self,
        tenant: &TenantId,
        now: Instant,
        f: impl FnOnce(&mut Budget) -> T,
    ) -> Option<T> {
        let mut books = self.lock();
        let Books {
            budgets,
            overrides,
            shares,
        } = &mut *books;
        if !budgets.contains_key(tenant) {
            if budgets.len() >= self.config.max_tenants {
                // Idle books hold nothing: dropping them loses no slot.
                budgets.retain(|_, b| !b.idle(now));
            }
            if budgets.len() >= self.config.max_tenants {
                return None;
            }
            let settings = overrides.get(tenant).copied().unwrap_or(self.config.tenant);
            let life = lease::reclaim_after(
                Duration::from_millis(self.config.lease_ttl_ms),
                Duration::from_millis(self.config.lease_grace_ms),
            );
            let policy = settings.policy(&self.split, shares.get(tenant).copied());
            budgets.insert(tenant.clone(), Budget::new(policy, life, now));
        }
        budgets.get_mut(tenant).map(f)
    }

    /// Admits one invocation of `function` (reserving `reservation` slots for it) at the
    /// region.
    ///
    /// # Errors
    /// [`LimitRefusal::Concurrency`] when the tenant is at its limit (never queued),
    /// [`LimitRefusal::Tenants`] when the region keeps books for too many tenants.
    pub fn admit(
        self: &Arc<Self>,
        tenant: &TenantId,
        function: &str,
        reservation: Option<u32>,
    ) -> Result<Permit, LimitRefusal> {
        let now = self.clock.now();
        let outcome = self.with_budget(tenant, now, |b| {
            b.reserve(function, reservation);
            b.admit(now, function)
        });
        match outcome {
            Some(Ok(charge)) => Ok(Permit {
                limits: Arc::clone(self),
                tenant: tenant.clone(),
                function: function.to_owned(),
                charge,
                admitted: now,
            }),
            Some(Err(refused)) => Err(LimitRefusal::Concurrency {
                tenant: tenant.clone(),
                limit: refused.limit,
                retry_after: refused.retry_after,
            }),
            None => Err(LimitRefusal::Tenants {
                max: self.config.max_tenants,
                retry_after: RETRY_AFTER,
            }),
        }
    }

    /// `holder` asks for `wanted` more slots of `tenant` (0: renew only). Returns the slots
    /// granted now, the tenant's current limit and all `holder` holds after the grant.
    pub fn lease(&self, holder: &str, tenant: &TenantId, wanted: u32) -> (u32, u32, u32) {
        let now = self.clock.now();
        self.with_budget(tenant, now, |b| {
            let granted = b.acquire_lease(now, holder, wanted);
            (granted, b.current(now), b.held_by(holder))
        })
        .unwrap_or((0, 0, 0))
    }

    /// `holder` returns `slots` of `tenant`.
    pub fn return_lease(&self, holder: &str, tenant: &TenantId, slots: u32) {
        let now = self.clock.now();
        let mut books = self.lock();
        if let Some(b) = books.budgets.get_mut(tenant) {
            b.return_lease(now, holder, slots);
        }
    }

    /// Every tracked tenant's usage, sorted by tenant.
    pub fn usage(&self) -> Vec<TenantUsage> {
        let now = self.clock.now();
        let mut books = self.lock();
        let mut out: Vec<TenantUsage> = books
            .budgets
            .iter_mut()
            .map(|(t, b)| TenantUsage {
                tenant: t.clone(),
                limit: b.current(now),
                charged: b.charged(),
                leased: b.leased(),
                hard_max: b.limit().config().hard_max,
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32) -> Arc<Limits> {
        Arc::new(Limits::new(LimitsConfig {
            tenant: TenantLimits {
                hard_max: burst,
                burst,
                step: 1,
                interval_ms: 1000,
                rate_limit_rps: None,
            },
            max_tenants: 2,
            ..LimitsConfig::default()
        }))
    }

    fn t(s: &str) -> TenantId {
        TenantId::new(s.to_owned()).expect("valid tenant")
    }

    #[test]
    fn over_the_limit_is_throttled_and_a_dropped_permit_frees_its_slot() {
        let l = limits(2);
        let a = l.admit(&t("acme"), "f", None).expect("first");
        let (granted, limit, held) = l.lease("pop-1", &t("acme"), 5);
        assert_eq!((granted, limit, held), (1, 2, 1));
        let err = l.admit(&t("acme"), "f", None).expect_err("full");
        assert!(
            matches!(err, LimitRefusal::Concurrency { limit: 2, .. }),
            "{err:?}"
        );
        let err = ApiError::from(err);
        assert_eq!(err.kind, common::model::ErrorKind::Throttled);
        assert!(err.retry_after.is_some());
        drop(a);
        assert!(l.admit(&t("acme"), "f", None).is_ok());
    }

    #[test]
    fn tenants_do_not_share_budgets() {
        let l = limits(1);
        let _a = l.admit(&t("a"), "f", None).expect("a");
        assert!(l.admit(&t("a"), "f", None).is_err());
        assert!(l.admit(&t("b"), "f", None).is_ok());
    }

    #[test]
    fn beyond_max_tenants_idle_books_make_room() {
        let l = limits(1);
        drop(l.admit(&t("a"), "f", None).expect("a"));
        let _b = l.admit(&t("b"), "f", None).expect("b");
        let _c = l.admit(&t("c"), "f", None).expect("a was idle");
        assert!(l.admit(&t("d"), "f", None).is_err(), "b and c are busy");
    }

    #[test]
    fn an_invalid_override_is_refused_and_changes_nothing() {
        let l = limits(2);
        let bad = TenantLimits {
            burst: 5,
            hard_max: 1,
            ..TenantLimits::default()
        };
        assert!(l.set_override(&t("a"), Some(bad)).is_err());
        assert_eq!(l.settings(&t("a")).hard_max, 2);
    }

    #[test]
    fn a_tenant_over_its_rate_is_throttled() {
        let l = limits(5);
        let limited = TenantLimits {
            rate_limit_rps: Some(1),
            ..l.settings(&t("a"))
        };
        l.set_override(&t("a"), Some(limited)).expect("valid");
        let f = FunctionKey {
            tenant: t("a"),
            name: common::model::FunctionName::new("f").expect("valid"),
        };
        assert!(l.check_rate(&f, None).is_ok());
        let err = l.check_rate(&f, None).expect_err("over");
        assert!(matches!(err, LimitRefusal::TenantRate { .. }), "{err:?}");
        let g = FunctionKey {
            tenant: t("b"),
            name: common::model::FunctionName::new("g").expect("valid"),
        };
        assert!(l.check_rate(&g, Some(1)).is_ok());
        assert!(l.check_rate(&g, Some(1)).is_err());
    }

    #[test]
    fn an_override_applies_to_existing_books() {
        let l = limits(1);
        let _a = l.admit(&t("a"), "f", None).expect("a");
        let more = TenantLimits {
            hard_max: 3,
            burst: 3,
            ..TenantLimits::default()
        };
        l.set_override(&t("a"), Some(more)).expect("valid");
        assert!(l.admit(&t("a"), "f", None).is_ok());
        assert_eq!(l.usage()[0].limit, 3);
    }
}
