//! Adaptive per-tenant concurrency and the lease accounting that keeps it global.
//!
//! Owns two sans-IO pieces:
//! - [`AdaptiveLimit`]: a tenant's current concurrency limit. It starts at a burst value,
//!   grows by `step` per `interval` while demand presses against it (demand reached the
//!   limit, or something was refused, during the interval), and decays by `step` per
//!   interval towards the burst value while demand stays below it. It never exceeds the
//!   hard maximum nor drops below the burst value.
//! - [`Budget`]: the region's books for one tenant. The region's own in-flight invocations
//!   and the leases it granted POPs are both charged against the current limit, so
//!   `Σ leases + region in-flight ≤ limit` holds whenever a grant or an admission is made.
//!   Functions with reserved concurrency (`max_concurrency`) draw from their own carve-out
//!   first; leases only ever cover the shared rest.
//!
//! Never reads a clock or performs I/O: every event carries `now`. A clock that moves
//! backwards is treated as not having moved.

use super::hold::{self, HoldTime};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a tenant's limit behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// The limit never grows past this.
    pub hard_max: u32,
    /// Where the limit starts and what it decays back to (clamped to `hard_max`).
    pub burst: u32,
    /// How much the limit grows (or decays) per interval.
    pub step: u32,
    /// How often the limit may change.
    pub interval: Duration,
}

impl LimitConfig {
    fn floor(&self) -> u32 {
        self.burst.min(self.hard_max)
    }
}

/// A tenant's adaptive concurrency limit.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    config: LimitConfig,
    current: u32,
    interval_start: Instant,
    /// Demand reached the limit or something was refused in the open interval.
    pressed: bool,
}

impl AdaptiveLimit {
    /// A limit at the burst value, its first interval starting at `now`.
    pub fn new(config: LimitConfig, now: Instant) -> Self {
        Self {
            current: config.floor(),
            config,
            interval_start: now,
            pressed: false,
        }
    }

    /// The limit now (call [`Self::tick`] first to apply elapsed intervals).
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The configuration.
    pub fn config(&self) -> LimitConfig {
        self.config
    }

    /// Replaces the configuration (an operator override); the current limit is clamped
    /// into the new `[burst, hard_max]` range at once.
    pub fn reconfigure(&mut self, config: LimitConfig) {
        self.config = config;
        self.current = self.current.clamp(config.floor(), config.hard_max);
    }

    /// Records the demand seen at `now`: `in_flight` invocations wanted to run, and
    /// `refused` says whether one was turned away. Demand equal to the limit presses.
    pub fn observe(&mut self, now: Instant, in_flight: u32, refused: bool) {
        self.tick(now);
        if refused || in_flight >= self.current {
            self.pressed = true;
        }
    }

    /// Closes every interval that ended by `now`: the first one grows the limit when it
    /// was pressed, otherwise decays it; each further (empty) interval decays it.
    pub fn tick(&mut self, now: Instant) {
        let interval = self.config.interval.max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.interval_start);
        if elapsed < interval {
            return;
        }
        // Whole intervals only, computed without looping so a huge clock jump is cheap.
        let n = elapsed.as_nanos() / interval.as_nanos();
        let step = self.config.step;
        let (floor, max) = (self.config.floor(), self.config.hard_max);
        let idle_intervals = if self.pressed {
            self.current = self.current.saturating_add(step).min(max);
            n - 1
        } else {
            n
        };
        let decay = u128::from(step).saturating_mul(idle_intervals);
        let decay = u32::try_from(decay).unwrap_or(u32::MAX);
        self.current = self.current.saturating_sub(decay).max(floor);
        self.pressed = false;
        // n * interval <= elapsed, so this fits; fall back to `now` rather than panic.
        let advance = u32::try_from(n)
            .ok()
            .and_then(|n| interval.checked_mul(n))
            .unwrap_or(elapsed);
        self.interval_start = self.interval_start.checked_add(advance).unwrap_or(now);
    }

    /// When the open interval closes.
    pub fn poll_timeout(&self) -> Instant {
        self.interval_start + self.config.interval.max(Duration::from_millis(1))
    }
}

/// Who holds a lease: a POP's node id.
pub type Holder = String;

#[derive(Debug, Clone, Copy)]
struct Lease {
    slots: u32,
    expires: Instant,
}

/// Why an admission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The limit that was full.
    pub limit: u32,
    /// When a slot is likely to be free: the first of the region's running invocations
    /// to end (from how long they are held), a lease to lapse, or the limit to grow,
    /// whichever comes first.
    pub retry_after: Duration,
}

/// What the region charged an admitted invocation to; hand it back to [`Budget::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The function's reserved concurrency.
    Reserved,
    /// The tenant's shared pool.
    Shared,
}

/// The region's books for one tenant's concurrency.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: AdaptiveLimit,
    /// How long a lease lives past its last renewal before the region reclaims it.
    lease_life: Duration,
    /// Invocations running at the region in the shared pool.
    shared_in_flight: u32,
    /// Per function with a reservation: (reservation, in flight in it).
    reserved: BTreeMap<String, (u32, u32)>,
    leases: BTreeMap<Holder, Lease>,
    /// How long the region's invocations hold their slots.
    hold: HoldTime,
    /// The most concurrency wanted since [`Budget::take_demand`] last read it.
    peak_demand: u32,
}

impl Budget {
    /// Books for a tenant limited by `config`, whose leases are reclaimed `lease_life` after
    /// their last renewal.
    pub fn new(config: LimitConfig, lease_life: Duration, now: Instant) -> Self {
        Self {
            limit: AdaptiveLimit::new(config, now),
            lease_life,
            shared_in_flight: 0,
            reserved: BTreeMap::new(),
            leases: BTreeMap::new(),
            hold: HoldTime::default(),
            peak_demand: 0,
        }
    }

    /// The most concurrency wanted since the last call (what was charged at its peak;
    /// one more, or a lease's unmet rest, when something was refused), and starts the next period from what is charged now:
    /// the demand regions sharing a limit rebalance by ([`super::split::Allocation`]).
    pub fn take_demand(&mut self) -> u32 {
        let charged = self.charged();
        let peak = self.peak_demand.max(charged);
        self.peak_demand = charged;
        peak
    }

    fn wanted(&mut self, now: Instant, demand: u32, refused: bool) {
        self.peak_demand = self.peak_demand.max(demand);
        self.limit.observe(now, demand, refused);
    }

    /// The adaptive limit.
    pub fn limit(&mut self) -> &mut AdaptiveLimit {
        &mut self.limit
    }

    /// The current limit after applying elapsed intervals and expired leases.
    pub fn current(&mut self, now: Instant) -> u32 {
        self.advance(now);
        self.limit.current()
    }

    /// Slots leased to POPs now.
    pub fn leased(&self) -> u32 {
        self.leases.values().map(|l| l.slots).sum()
    }

    /// Invocations running at the region now (shared and reserved).
    pub fn region_in_flight(&self) -> u32 {
        self.shared_in_flight + self.reserved.values().map(|(_, n)| n).sum::<u32>()
    }

    /// Everything charged against the limit: leases plus the region's in-flight.
    pub fn charged(&self) -> u32 {
        self.leased() + self.region_in_flight()
    }

    /// Slots reserved for functions, carved out of the limit (never more than the limit).
    fn reservations(&self) -> u32 {
        let sum: u32 = self.reserved.values().map(|(r, _)| *r).sum();
        sum.min(self.limit.current())
    }

    /// What the shared pool may still hand out (to the region or to leases).
    fn shared_free(&self) -> u32 {
        let shared_cap = self.limit.current() - self.reservations();
        // Reserved functions running beyond their reservation spill into the shared
        // pool; they are in `shared_in_flight` already.
        shared_cap.saturating_sub(self.shared_in_flight + self.leased())
    }

    fn advance(&mut self, now: Instant) {
        self.limit.tick(now);
        self.leases.retain(|_, l| now < l.expires);
    }

    /// Declares `function`'s reserved concurrency (`None` or 0 removes it). Reservations
    /// are carved out of the tenant's limit; together they never take more than it.
    pub fn reserve(&mut self, function: &str, reservation: Option<u32>) {
        match reservation.filter(|r| *r > 0) {
            Some(r) => {
                let e = self.reserved.entry(function.to_owned()).or_insert((r, 0));
                e.0 = r;
            }
            None => {
                // Keep an entry that still has invocations running; only its reservation
                // goes.
                if let Some(e) = self.reserved.get_mut(function) {
                    e.0 = 0;
                }
                self.reserved.retain(|_, (r, n)| *r > 0 || *n > 0);
            }
        }
    }

    /// Admits one invocation of `function` at the region: from its reservation when it has
    /// room, otherwise from the shared pool.
    ///
    /// # Errors
    /// [`Refused`] when neither has room; the refusal presses the limit to grow.
    pub fn admit(&mut self, now: Instant, function: &str) -> Result<Charge, Refused> {
        self.advance(now);
        if let Some((r, n)) = self.reserved.get_mut(function)
            && *n < *r
        {
            *n += 1;
            return Ok(Charge::Reserved);
        }
        if self.shared_free() > 0 {
            self.shared_in_flight += 1;
            let demand = self.charged();
            self.wanted(now, demand, false);
            return Ok(Charge::Shared);
        }
        let demand = self.charged() + 1;
        self.wanted(now, demand, true);
        Err(Refused {
            limit: self.limit.current(),
            retry_after: self.next_slot(now),
        })
    }

    /// When a slot is likely to be free (see [`Refused::retry_after`]).
    fn next_slot(&self, now: Instant) -> Duration {
        let running = self.region_in_flight();
        let ends = (running > 0).then(|| self.hold.next_free(running));
        let lapses = self
            .leases
            .values()
            .map(|l| l.expires.saturating_duration_since(now))
            .min();
        let grows = self.limit.poll_timeout().saturating_duration_since(now);
        [ends, lapses, Some(grows)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(hold::UNOBSERVED_WAIT)
            .clamp(hold::MIN_WAIT, hold::MAX_WAIT)
    }

    /// Ends an invocation admitted with `charge` after `held_for`.
    pub fn release(&mut self, function: &str, charge: Charge, held_for: Duration) {
        self.hold.record(held_for);
        match charge {
            Charge::Reserved => {
                if let Some((_, n)) = self.reserved.get_mut(function) {
                    *n = n.saturating_sub(1);
                }
                self.reserved.retain(|_, (r, n)| *r > 0 || *n > 0);
            }
            Charge::Shared => self.shared_in_flight = self.shared_in_flight.saturating_sub(1),
        }
    }

    /// `holder` asks for `wanted` more slots (0: only renew). Grants what the shared pool
    /// has free, at most `wanted`, and renews the holder's whole lease. Returns the slots
    /// granted now.
    pub fn acquire_lease(&mut self, now: Instant, holder: &str, wanted: u32) -> u32 {
        self.advance(now);
        let granted = wanted.min(self.shared_free());
        let expires = now + self.lease_life;
        if granted > 0 || self.leases.contains_key(holder) {
            let lease = self
                .leases
                .entry(holder.to_owned())
                .or_insert(Lease { slots: 0, expires });
            lease.slots += granted;
            lease.expires = expires;
        }
        if wanted > 0 {
            let demand = self.charged() + (wanted - granted);
            self.wanted(now, demand, granted < wanted);
        }
        granted
    }

    /// `holder` gives back `slots` of its lease (it stopped drawing from them before
    /// sending). Returning more than it holds returns everything.
    pub fn return_lease(&mut self, now: Instant, holder: &str, slots: u32) {
        self.advance(now);
        if let Some(l) = self.leases.get_mut(holder) {
            l.slots = l.slots.saturating_sub(slots);
            if l.slots == 0 {
                self.leases.remove(holder);
            }
        }
    }

    /// Slots `holder` holds now (0 once its lease expired).
    pub fn held_by(&self, holder: &str) -> u32 {
        self.leases.get(holder).map_or(0, |l| l.slots)
    }

    /// Nothing is charged and the limit is back at its floor: the books may be dropped.
    pub fn idle(&mut self, now: Instant) -> bool {
        self.advance(now);
        self.charged() == 0 && self.limit.current() == self.limit.config().floor()
    }
}

#[cfg(test)]
#[path = "concurrency_tests.rs"]
mod tests;
