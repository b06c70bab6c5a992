//! The tenants' concurrency leases in the simulator, shaped like the POP's lease shell
//! (pop-node/src/leases.rs, whose module docs state the rules) over the nodes' own books:
//! each POP keeps a `strata_core::policy::lease::Book` per tenant and each region the
//! tenant's `policy::concurrency::Budget`, and every decision is theirs.
//!
//! - A local run needs a slot of its tenant's lease ([`PopLeases::draw`], called from the
//!   edge planner's draw, only with a free node slot); without one the planner forwards
//!   (`lease: false`), counted as a forward for want of a lease.
//! - A draw that leaves the lease low asks the region for more (`Book::wants`: a batch,
//!   or as many as are in use); the answer arrives one POP↔region RTT later, granted from
//!   the tenant's budget at the region (`Budget::acquire_lease`: the same books its
//!   forwards are admitted by, so leases and forwards share the tenant's limit). A region
//!   without a tenant limit keeps no books and grants every slot asked for.
//! - Every `renew_every(ttl)` a renewal round settles each book (`Book::settle`: what a
//!   busy, idle-held or quiet tenant keeps), gives the surplus back and renews the rest.
//! - Lease messages go one at a time per POP, in order (the shell's lock): a round's
//!   returns and renewals go before anything queued after it. Each goes to the region the
//!   POP's region choice prefers (returns: to the region counting the lease); a message to
//!   a dead region gets no answer until the POP's liveness timeout (`failure_detect_ms`),
//!   and while one goes unanswered for `renew_every(ttl)` the POP's leases stall
//!   (`Answers`), so tenants draw within `Book::draw_stalled`'s cap.
//! - A forward refused only for want of a lease that then finds no region reachable runs
//!   here uncounted (`policy::edge::run_uncounted`).
//!
//! Not modelled: the POP's bound on tenants holding books (`lease_tenants`, 10 000 by
//! default, far above any scenario's tenants per POP) and lost returns.

use super::queue::Nanos;
use super::shard::Shard;
use super::{Event, ns};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use strata_core::policy::lease::{self, Answers, Book, HoldRule};

/// The `held` of an answer from a region that keeps no books for the tenant (no tenant
/// limit): it granted everything asked for, and counts nothing the POP must adopt.
const UNCOUNTED: u32 = u32::MAX;

/// The lease settings as the books and the clock take them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Terms {
    pub rule: HoldRule,
    pub ttl: Duration,
    /// Renewal period and stall threshold (`lease::renew_every`).
    pub renew: Duration,
    /// How long a region counts a lease not renewed (`lease::reclaim_after`).
    pub reclaim: Duration,
}

impl Terms {
    pub fn new(l: &crate::scenario::LeaseModel) -> Self {
        let ttl = Duration::from_millis(l.ttl_ms);
        Self {
            rule: HoldRule {
                batch: l.batch.max(1),
                idle_hold: Duration::from_millis(l.idle_hold_ms),
            },
            ttl,
            renew: lease::renew_every(ttl),
            reclaim: lease::reclaim_after(ttl, Duration::from_millis(l.grace_ms)),
        }
    }

    /// The renewal period on the simulator's clock.
    pub fn renew_ns(&self) -> Nanos {
        ns(self.renew.as_secs_f64() * 1e3).max(1)
    }
}

/// What the leases did in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeaseCounters {
    /// Invocations forwarded only for want of a lease slot (a node slot was free).
    pub forwards: u64,
    /// Acquires sent (renewals not counted).
    pub acquires: u64,
    /// Acquires answered with at least one slot.
    pub grants: u64,
    /// Slots those grants added.
    pub slots_granted: u64,
    /// Forwards refused for want of a lease that found no region and ran here uncounted.
    pub uncounted_runs: u64,
}

impl LeaseCounters {
    /// Adds another shard's counts.
    pub fn absorb(&mut self, other: &Self) {
        // Destructured so that a new counter cannot be forgotten here.
        let Self {
            forwards,
            acquires,
            grants,
            slots_granted,
            uncounted_runs,
        } = other;
        self.forwards += forwards;
        self.acquires += acquires;
        self.grants += grants;
        self.slots_granted += slots_granted;
        self.uncounted_runs += uncounted_runs;
    }
}

/// A lease message waiting for its turn.
#[derive(Debug, Clone, Copy)]
enum Msg {
    /// Ask for `want` more slots of `tenant` (0: renew).
    Acquire { tenant: u32, want: u32 },
    /// Give `slots` of `tenant` back to `region`, which counts them.
    Return {
        region: u32,
        tenant: u32,
        slots: u32,
    },
    /// A renewal round: settle every book, then its returns and renewals.
    Round,
}

/// One POP's leases.
#[derive(Debug, Default)]
pub(super) struct PopLeases {
    /// Per tenant (ordered: rounds go through them in a fixed order).
    books: BTreeMap<u32, Book<u32>>,
    answers: Answers,
    waiting: VecDeque<Msg>,
    /// The message awaiting its answer, and when it was sent.
    in_flight: Option<(Msg, Nanos)>,
    round_queued: bool,
}

impl PopLeases {
    /// Draws a slot of `tenant`'s lease at `at` (stalled draws while lease messages go
    /// unanswered), and queues an acquire when the book wants one.
    pub fn draw(&mut self, at: Instant, tenant: u32, t: &Terms) -> bool {
        let stalled = self.answers.stalled(at, t.renew);
        let b = self.books.entry(tenant).or_insert_with(|| Book::new(at));
        let drawn = if stalled {
            b.draw_stalled(at, &t.rule)
        } else {
            b.draw(at, &t.rule)
        };
        if let Some(want) = b.wants(at, &t.rule) {
            self.waiting.push_back(Msg::Acquire { tenant, want });
        }
        drawn
    }

    /// A drawn slot of `tenant` is free again.
    pub fn finish(&mut self, tenant: u32) {
        if let Some(b) = self.books.get_mut(&tenant) {
            b.finish();
        }
    }

    /// Whether a message can go now.
    fn ready(&self) -> bool {
        self.in_flight.is_none() && !self.waiting.is_empty()
    }

    /// A renewal round at `at` (the shell's `Leases::renew`): settles every book and puts
    /// its returns, then its renewals, before anything else waiting.
    fn round(&mut self, at: Instant, rule: &HoldRule) {
        self.round_queued = false;
        let mut returns = Vec::new();
        let mut renewals = Vec::new();
        for (&tenant, b) in &mut self.books {
            let surplus = b.settle(at, rule);
            if let Some(region) = b.region().filter(|_| surplus > 0) {
                returns.push(Msg::Return {
                    region,
                    tenant,
                    slots: surplus,
                });
            }
            if b.holding().0 > 0 {
                renewals.push(Msg::Acquire { tenant, want: 0 });
            }
        }
        self.books.retain(|_, b| !b.empty());
        for m in returns.into_iter().chain(renewals).rev() {
            self.waiting.push_front(m);
        }
    }
}

impl Shard<'_> {
    /// `pop`'s renewal timer: queues a round unless one is still waiting.
    pub(super) fn lease_tick(&mut self, now: Nanos, pop: u32) {
        let w = self.w;
        let next = now + w.leases.renew_ns();
        if next < w.end {
            self.queue.push(next, Event::LeaseTick { pop });
        }
        let i = self.local_pop(pop);
        let l = &mut self.pops[i].leases;
        if !l.round_queued {
            l.round_queued = true;
            l.waiting.push_back(Msg::Round);
        }
        self.send_leases(now, pop);
    }

    /// Sends `pop`'s next lease message if none awaits an answer.
    pub(super) fn send_leases(&mut self, now: Nanos, pop: u32) {
        let w = self.w;
        let at = self.at(now);
        let i = self.local_pop(pop);
        while self.pops[i].leases.ready() {
            let p = &mut self.pops[i];
            let Some(msg) = p.leases.waiting.pop_front() else {
                return;
            };
            let (region, tenant, slots, back) = match msg {
                Msg::Round => {
                    p.leases.round(at, &w.leases.rule);
                    continue;
                }
                Msg::Acquire { tenant, want } => {
                    let Some(region) = self.chooser.choose(now, pop, &p.views) else {
                        // No region to ask: the request fails at once, unanswered.
                        p.leases.answers.sent(at);
                        if want > 0
                            && let Some(b) = p.leases.books.get_mut(&tenant)
                        {
                            b.asking = false;
                        }
                        continue;
                    };
                    if want > 0 {
                        self.lease_counts.acquires += 1;
                    }
                    (region, tenant, want, false)
                }
                Msg::Return {
                    region,
                    tenant,
                    slots,
                } => {
                    // Only over a live connection: a region the POP knows is gone
                    // reclaims the slots when the lease expires instead.
                    let gone = w
                        .down_since(region, now)
                        .is_some_and(|d| now >= d + w.c.failure_detect);
                    if gone {
                        continue;
                    }
                    (region, tenant, slots, true)
                }
            };
            let p = &mut self.pops[i];
            p.leases.answers.sent(at);
            p.leases.in_flight = Some((msg, now));
            if let Some(down) = w.down_since(region, now) {
                // Sent to a silently dead region: nothing answers until the POP's
                // liveness timeout.
                let noticed = (down + w.c.failure_detect).max(now);
                self.queue.push(noticed, Event::LeaseFailed { pop });
                return;
            }
            let arrive = now + w.rtt(pop, region) / 2;
            let event = Event::LeaseAt {
                region,
                pop,
                tenant,
                slots,
                back,
            };
            return self.send(w.shard_of_region(region), arrive, event);
        }
    }

    /// A lease message of `pop` reaches `region` at `now`: the tenant's books grant (or
    /// take back) and the answer heads back.
    pub(super) fn lease_at(
        &mut self,
        now: Nanos,
        region: u32,
        pop: u32,
        tenant: u32,
        slots: u32,
        back: bool,
    ) {
        let w = self.w;
        let at = self.at(now);
        let i = self.local_region(region);
        let r = &mut self.regions[i];
        let to = w.shard_of_pop(pop);
        let rtt = w.rtt(pop, region);
        let answered = now + (rtt - rtt / 2);
        if !r.up {
            // Lost with the region: the POP's connection times out.
            let noticed = w
                .down_since(region, now)
                .map_or(now, |d| d + w.c.failure_detect);
            return self.send(to, noticed.max(answered), Event::LeaseFailed { pop });
        }
        let holder = w.holders[pop as usize].as_str();
        let (held, granted) = match r.budgets.get_mut(tenant as usize) {
            Some(b) if back => {
                b.return_lease(at, holder, slots);
                (b.held_by(holder), 0)
            }
            Some(b) => {
                let granted = b.acquire_lease(at, holder, slots);
                (b.held_by(holder), granted)
            }
            None => (UNCOUNTED, if back { 0 } else { slots }),
        };
        let event = Event::LeaseAnswer {
            pop,
            region,
            held,
            granted,
        };
        self.send(to, answered, event);
    }

    /// `region`'s answer reaches `pop`: it counts `held` slots for the POP, `granted` of
    /// them just now. Applies it to the book (`Book::granted`) and sends the next message.
    pub(super) fn lease_answer(
        &mut self,
        now: Nanos,
        pop: u32,
        region: u32,
        held: u32,
        granted: u32,
    ) {
        let w = self.w;
        let i = self.local_pop(pop);
        let l = &mut self.pops[i].leases;
        l.answers.answered();
        let Some((msg, sent)) = l.in_flight.take() else {
            return;
        };
        if let Msg::Acquire { tenant, want } = msg
            && let Some(b) = l.books.get_mut(&tenant)
        {
            if want > 0 {
                b.asking = false;
                if granted > 0 {
                    self.lease_counts.grants += 1;
                    self.lease_counts.slots_granted += u64::from(granted);
                }
            }
            let held = if held == UNCOUNTED {
                let kept = if b.region() == Some(region) {
                    b.holding().0
                } else {
                    0
                };
                kept + granted
            } else {
                held
            };
            let valid_until = self.base + Duration::from_nanos(sent) + w.leases.ttl;
            if let Some((old, slots)) = b.granted(region, held, valid_until) {
                // The lease moved: the old region's free slots go back first.
                l.waiting.push_front(Msg::Return {
                    region: old,
                    tenant,
                    slots,
                });
            }
        }
        self.send_leases(now, pop);
    }

    /// `pop`'s lease message got no answer: the next one goes.
    pub(super) fn lease_failed(&mut self, now: Nanos, pop: u32) {
        let i = self.local_pop(pop);
        let l = &mut self.pops[i].leases;
        if let Some((Msg::Acquire { tenant, want }, _)) = l.in_flight.take()
            && want > 0
            && let Some(b) = l.books.get_mut(&tenant)
        {
            b.asking = false;
        }
        self.send_leases(now, pop);
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
