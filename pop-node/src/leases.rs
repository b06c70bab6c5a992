//! The POP's concurrency leases: slots of each tenant's budget that a region granted this
//! POP. A local run draws one slot for its duration; when a tenant's free slots run low
//! the POP asks for another batch in the background, renews what it holds every third of
//! the lease's TTL, and gives back surplus ([`book::Book::settle`]): a busy tenant keeps
//! free slots as many as it uses (at least a batch); a tenant quiet for a round but that
//! drew within `idle_hold` keeps a floor of free slots, its peak in use over the hold
//! window (1 to a batch), so its next request runs here instead of being forwarded while
//! a lease is fetched again; after the hold, every free slot goes back. Without a free
//! slot the invocation is not run here: the invoker forwards it, and the region charges it
//! to its own in-flight count (never to this POP's lease), answering 429 when the tenant
//! is at its limit.
//!
//! Budget trade-off of the hold: a floor is counted at the region like a running
//! invocation, so a tenant idle-held at P POPs has up to P × `batch` of its limit taken
//! while it is quiet, and other POPs' grants (and forwarded requests, 429 at the limit)
//! see less for up to `idle_hold`. It is bounded by the floor (its peak use, at most a
//! batch), the hold itself, and `max_tenants` books per POP.
//!
//! Safety: the POP stops drawing `ttl` after it sent the request that granted or renewed a
//! lease; the region reclaims a lease only after `ttl` plus a grace longer than any
//! invocation, so nothing drawn here runs uncounted while regions answer. A hold only keeps
//! renewing slots the region counts: it never draws beyond `ttl` of the last renewal either.
//!
//! A region that stops answering (it died silently, the link was cut: the transport notices
//! only after its idle timeout, 5 s) would otherwise expire every lease here after `ttl`,
//! and locally runnable invocations would be forwarded to that very region and hang. So
//! lease messages are *stalled* once the oldest one sent since the last reply and without
//! a reply of its own was sent `stall_after` ago (a third of the TTL: one renewal period,
//! before a lease renewed on time can expire; [`book::Answers`]), and while they are, a
//! tenant draws beyond its lease ([`Book::draw_stalled`]): at most `max(granted, batch)`
//! slots in use, `granted` being what the region last counted. The stall ends at the next reply from any region (the
//! region came back, or the POP failed over and the lease moves); a message that fails
//! without a reply does not end it. With different tenants' messages in flight together, a
//! reply covers only what was sent before it arrived: a region that answers part of a
//! round and then dies is noticed `stall_after` after the first message it left
//! unanswered, not a round later. What this costs the global limit, per tenant and POP:
//! - draws within `granted` are still counted by the region until it reclaims the lease,
//!   `ttl + grace` after the last renewal it saw: nothing uncounted for that long;
//! - after that reclaim, and at once for slots beyond `granted` (when it was under a
//!   batch), they are uncounted: at most
//!   `max(granted, batch)` per tenant at this POP, within `local_concurrency` and
//!   `max_tenants` books, for as long as no region answers a lease message. A dead region
//!   counts nothing anyway; a live region that stops answering (overloaded, one-way
//!   partition) is overrun by at most that much until it answers, and then its count
//!   becomes the lease again (shrunk if it reclaimed).
//!
//! This is the policy of the invoker's "no region reachable" fallback (cached functions
//! run uncounted), noticed after `stall_after` instead of the transport's idle timeout,
//! and capped per tenant instead of only by `local_concurrency`.
//!
//! One region counts a tenant's lease: each book is tagged with the region that answered
//! last, and lease requests go to the region the link prefers (the one serving this POP's
//! forwards). When a reply comes from another region (the POP failed over, or moved for
//! RTT or pressure), the old lease stops being drawn from, its free slots are given back to
//! the old region (over a live connection only; otherwise it reclaims them at expiry) and
//! the new region's count becomes the lease; slots still running on the old lease stay
//! counted there until they end. When the new region counts fewer than the book kept (it
//! counts nothing for this POP yet), the tenant asks it for a batch in the same turn, so a
//! quiet tenant's idle hold survives the move (an empty book would be dropped after the
//! round and its next call forwarded). Returns go only to the region that counts the
//! lease, never to whichever region is preferred at the time.
//!
//! A tenant has at most one lease message in flight (the rule is the book's:
//! [`Book::wants`] and [`Book::round`] start one only when none is in flight, [`Book::done`]
//! ends it), and its `granted` changes only in its round before its return is sent, and by
//! the reply to its message. A round settles a tenant when its turn comes and sends its
//! return, then its renewal, each after the previous one's answer (an acquire in flight
//! stands for the renewal: its answer renews the lease too). So when a reply arrives none
//! of that tenant's returns is in flight, and the reply's `held` is exactly what that
//! region counts for this POP: it becomes the local count (shrinking it when the region
//! reclaimed an expired lease). When the lease moved, the old region's free slots go back
//! as part of the same message's turn, before the tenant's next. Slots are removed locally
//! before a return is sent, so the region's count is never below what this POP uses; a
//! book whose last slots are on their way back is kept until the return ends, so a new
//! book of that tenant cannot send an acquire alongside it. Different tenants' messages go
//! concurrently (a round has [`book::ROUND_CONCURRENCY`] in flight at once), so a round
//! costs about one round trip per that many tenants, not one per tenant: leases are
//! renewed well within a period even for hundreds of tenants at a far region.
//!
//! Bounds: the stall rule keeps one instant per message in flight (at most one per
//! tenant) and no per-tenant state beyond the book's in-use count and in-flight flags. At
//! most `max_tenants` tenants have books; beyond it a new tenant is forwarded, and the
//! idle-held book that drew longest ago has its hold ended, so the next round
//! gives its slots back and makes room. At most one acquire per tenant is in flight;
//! acquires live in a [`JoinSet`] that [`Leases::stop`] aborts; renewal rounds never
//! overlap (the next waits for the previous one's messages), and one has at most
//! [`book::ROUND_CONCURRENCY`] messages in flight.

use crate::upstream::RegionLink;
use book::{Answers, Book, HoldRule};
use common::clock::{Clock, SystemClock};
use common::model::{NodeId, TenantId};
use common::policy::lease as book;
use common::sharded::{SHARDS, Sharded, read, write};
use common::wire::Message;
use futures::StreamExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tracing::debug;

/// How the POP asks for and holds leases.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// Slots asked for at a time; also how many free slots a busy tenant keeps, and the
    /// most an idle one keeps.
    pub batch: u32,
    /// Tenants holding leases at once (the books are sharded by tenant, each shard holding
    /// its share: up to `SHARDS - 1` more in all from rounding).
    pub max_tenants: usize,
    /// How long after its last draw a quiet tenant keeps its floor of free slots; zero
    /// gives everything back after one quiet renewal round.
    pub idle_hold: Duration,
    /// How long a lease message may go unanswered before the POP treats its region as not
    /// answering and draws stalled ([`Book::draw_stalled`]); the node uses a third of the
    /// lease TTL (see [`book::Answers`]).
    pub stall_after: Duration,
}

/// A tenant's lease at this POP now, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseView {
    /// Slots the counting region granted, as far as this POP knows.
    pub held: u32,
    /// Slots in use by running invocations (drawn from the lease, or stalled draws).
    pub in_use: u32,
    /// Whether the lease may be drawn from (its TTL since the last renewal has not run out).
    pub valid: bool,
    /// Whether lease messages are stalled (no region answered one for `stall_after`), so
    /// draws go on without a valid lease, within the stalled cap.
    pub stalled: bool,
}

/// The POP's lease holder.
#[derive(Debug)]
pub struct Leases {
    holder: NodeId,
    link: Arc<RegionLink>,
    config: LeaseConfig,
    rule: HoldRule,
    /// The tenants' books, sharded by tenant: a draw and its return lock only their
    /// tenant's shard.
    held: Sharded<HashMap<TenantId, Book<SocketAddr>>>,
    /// Whether regions answer lease messages (the stall rule): read by every draw, written
    /// by lease messages.
    answers: RwLock<Answers>,
    requests: Mutex<JoinSet<()>>,
    /// Renewal rounds completed, for tests and operators waiting on them.
    rounds: tokio::sync::watch::Sender<u64>,
    /// Where lease expiry, holding and the stall rule read the time.
    clock: Arc<dyn Clock>,
}

/// One drawn slot; returned to the lease when dropped.
#[derive(Debug)]
pub struct Slot {
    leases: Arc<Leases>,
    tenant: TenantId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.leases.book(&self.tenant);
        if let Some(b) = held.get_mut(&self.tenant) {
            b.finish();
        }
    }
}

impl Leases {
    /// A holder named `holder` asking regions through `link`.
    pub fn new(holder: NodeId, link: Arc<RegionLink>, config: LeaseConfig) -> Self {
        let batch = config.batch.max(1);
        Self {
            holder,
            link,
            config: LeaseConfig { batch, ..config },
            rule: HoldRule {
                batch,
                idle_hold: config.idle_hold,
            },
            held: Sharded::default(),
            answers: RwLock::new(Answers::default()),
            requests: Mutex::new(JoinSet::new()),
            rounds: tokio::sync::watch::Sender::new(0),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same leases reading the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The shard holding `tenant`'s book, locked.
    fn book(&self, tenant: &TenantId) -> MutexGuard<'_, HashMap<TenantId, Book<SocketAddr>>> {
        self.held.by_key(tenant)
    }

    /// Every tenant with a book now.
    fn tenants(&self) -> Vec<TenantId> {
        let mut tenants = Vec::new();
        self.held
            .each(|shard| tenants.extend(shard.keys().cloned()));
        tenants
    }

    fn answers(&self) -> std::sync::RwLockWriteGuard<'_, Answers> {
        write(&self.answers)
    }

    /// Whether lease messages are stalled at `now` (see [`book::Answers`]).
    fn stalled(&self, now: Instant) -> bool {
        read(&self.answers).stalled(now, self.config.stall_after)
    }

    /// Draws a slot of `tenant`'s lease, or `None` when it has none free (the caller
    /// forwards). Asks for more in the background when free slots run low. While lease
    /// messages are stalled (the region does not answer), draws beyond the lease within
    /// the stalled cap (see the module docs).
    pub fn try_draw(self: &Arc<Self>, tenant: &TenantId) -> Option<Slot> {
        let now = self.clock.now();
        let stalled = self.stalled(now);
        let mut held = self.book(tenant);
        let max_tenants = self.config.max_tenants.div_ceil(SHARDS).max(1);
        if !held.contains_key(tenant) {
            if held.len() >= max_tenants {
                held.retain(|_, b| !b.empty());
                if held.len() >= max_tenants {
                    // Make room by the next round: end the hold of the idle book that drew
                    // longest ago (its slots go back then). This request is forwarded.
                    if let Some(b) = held
                        .values_mut()
                        .filter(|b| b.idle())
                        .min_by_key(|b| b.last_draw())
                    {
                        b.end_hold();
                    }
                    return None;
                }
            }
            held.insert(tenant.clone(), Book::new(now));
        }
        let b = held.get_mut(tenant)?;
        let drawn = if stalled {
            b.draw_stalled(now, &self.rule)
        } else {
            b.draw(now, &self.rule)
        };
        let slot = drawn.then(|| Slot {
            leases: Arc::clone(self),
            tenant: tenant.clone(),
        });
        if let Some(want) = b.wants(now, &self.rule) {
            drop(held);
            let me = Arc::clone(self);
            let tenant = tenant.clone();
            self.spawn(async move { me.acquire(&tenant, want).await });
        }
        slot
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        while requests.try_join_next().is_some() {}
        requests.spawn(task);
    }

    /// Asks for `want` more slots of `tenant`, its book marked in flight
    /// ([`Book::wants`]), and then for what the book wants when that ends.
    async fn acquire(&self, tenant: &TenantId, mut want: u32) {
        loop {
            self.exchange(tenant, want).await;
            match self.done(tenant) {
                Some(more) => want = more,
                None => return,
            }
        }
    }

    /// Ends `tenant`'s message in flight ([`Book::done`]); returns the acquire to send now,
    /// if any.
    fn done(&self, tenant: &TenantId) -> Option<u32> {
        let now = self.clock.now();
        self.book(tenant).get_mut(tenant)?.done(now, &self.rule)
    }

    /// Asks for `slots` more of `tenant` (0: renew) and applies the answer. Callers have
    /// marked the tenant's book in flight (see the module docs).
    async fn exchange(&self, tenant: &TenantId, slots: u32) {
        let sent = self.clock.now();
        let msg = Message::LeaseAcquire {
            holder: self.holder.clone(),
            tenant: tenant.clone(),
            slots,
        };
        self.answers().sent(sent);
        let reply = self.link.lease(&msg).await;
        match &reply {
            Ok(_) => self.answers().answered(sent, self.clock.now()),
            Err(_) => self.answers().failed(sent),
        }
        let back = {
            let mut held = self.book(tenant);
            let Some(b) = held.get_mut(tenant) else {
                return;
            };
            match reply {
                Ok((Message::LeaseGranted { held, ttl_ms, .. }, region)) => {
                    b.granted(region, held, sent + Duration::from_millis(ttl_ms))
                }
                Ok((other, _)) => {
                    debug!(?other, "unexpected answer to a lease request");
                    None
                }
                Err(e) => {
                    debug!(error = %e, "lease request failed");
                    None
                }
            }
        };
        // The lease moved: the old region's free slots go back to it before anything else.
        if let Some((region, slots)) = back {
            self.give_back(region, tenant, slots).await;
        }
    }

    /// Gives back `slots` of `tenant` to `region`, already removed from the local count.
    /// Callers have marked the tenant's book in flight.
    async fn give_back(&self, region: SocketAddr, tenant: &TenantId, slots: u32) {
        if !self.link.is_live(region) {
            // Not sent (no connection attempt for a return): the region reclaims the slots
            // when the lease expires, and nothing waits on an answer.
            debug!(%region, "lease return skipped: not connected");
            return;
        }
        let msg = Message::LeaseReturn {
            holder: self.holder.clone(),
            tenant: tenant.clone(),
            slots,
        };
        let sent = self.clock.now();
        self.answers().sent(sent);
        match self.link.lease_at(region, &msg).await {
            Ok(_) => self.answers().answered(sent, self.clock.now()),
            // The region reclaims the slots when the lease expires instead.
            Err(e) => {
                self.answers().failed(sent);
                debug!(%region, error = %e, "lease return failed");
            }
        }
    }

    /// One renewal round: each tenant gives back its surplus (see the module docs) to the
    /// region that counts its lease, then renews what it still holds. A tenant's messages
    /// go in that order, one at a time; different tenants' go concurrently, at most
    /// [`book::ROUND_CONCURRENCY`] at once, so a round takes about one round trip (two
    /// with returns) per that many tenants.
    pub async fn renew(&self) {
        let tenants = self.tenants();
        futures::stream::iter(tenants)
            .map(|tenant| self.renew_tenant(tenant))
            .buffer_unordered(book::ROUND_CONCURRENCY)
            .collect::<()>()
            .await;
        self.held.each(|shard| shard.retain(|_, b| !b.empty()));
        self.rounds.send_modify(|n| *n += 1);
    }

    /// `tenant`'s part of a renewal round ([`Book::round`]), settled when its turn comes.
    async fn renew_tenant(&self, tenant: TenantId) {
        let now = self.clock.now();
        let step = {
            let mut held = self.book(&tenant);
            let Some(b) = held.get_mut(&tenant) else {
                return;
            };
            b.round(now, &self.rule)
        };
        let Some(step) = step else {
            return;
        };
        if let Some((region, slots)) = step.give_back {
            self.give_back(region, &tenant, slots).await;
        }
        if step.renew {
            self.exchange(&tenant, 0).await;
        }
        if let Some(want) = self.done(&tenant) {
            // It ran low while the round's messages were in flight.
            self.acquire(&tenant, want).await;
        }
    }

    /// Renews every `ttl / 3` until the node stops (the region's TTL is learned from its
    /// grants; `ttl` is the POP's expectation of it). A round that takes longer delays the
    /// next one.
    pub async fn run(self: Arc<Self>, ttl: Duration) {
        let mut tick = tokio::time::interval(book::renew_every(ttl));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.renew().await;
        }
    }

    /// Slots of `tenant` held and in use now, for gauges and tests.
    pub fn holding(&self, tenant: &TenantId) -> (u32, u32) {
        self.book(tenant).get(tenant).map_or((0, 0), Book::holding)
    }

    /// `tenant`'s lease here now (all zero and invalid when it has no book).
    pub fn view(&self, tenant: &TenantId) -> LeaseView {
        let now = self.clock.now();
        let stalled = self.stalled(now);
        let held = self.book(tenant);
        let (held_slots, in_use) = held.get(tenant).map_or((0, 0), Book::holding);
        LeaseView {
            held: held_slots,
            in_use,
            valid: held.get(tenant).is_some_and(|b| b.valid(now)),
            stalled,
        }
    }

    /// Tenants with a book here now (bounded by `max_tenants`, see [`LeaseConfig`]).
    pub fn books(&self) -> usize {
        let mut n = 0;
        self.held.each(|shard| n += shard.len());
        n
    }

    /// The region counting `tenant`'s lease here, if it holds one.
    pub fn region_of(&self, tenant: &TenantId) -> Option<SocketAddr> {
        self.book(tenant).get(tenant).and_then(Book::region)
    }

    /// Renewal rounds completed so far; changes after each round.
    pub fn rounds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    /// Aborts background requests.
    pub fn stop(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}
