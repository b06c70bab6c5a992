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
//! - Every `renew_every(ttl)` a renewal round goes through the books (`Book::round`:
//!   settles what a busy, idle-held or quiet tenant keeps), gives each tenant's surplus back
//!   and then renews the rest; a tick while a round is still in progress starts the next
//!   when it ends (the shell's rounds never overlap).
//! - Lease messages go one at a time per tenant (the book's rule: `Book::wants`,
//!   `Book::round`, `Book::done`), and different tenants' concurrently: a round has at most
//!   `lease::ROUND_CONCURRENCY` tenants' messages in flight, each answered an RTT later, so
//!   a round costs about one RTT per that many tenants, as in the shell. Each goes to the
//!   region the POP's region choice prefers (returns: to the region counting the lease); a
//!   message to a dead region gets no answer until the POP's liveness timeout
//!   (`failure_detect_ms`), and while one goes unanswered for `renew_every(ttl)` the POP's
//!   leases stall (`Answers`), so tenants draw within `Book::draw_stalled`'s cap.
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

/// A lease message of a tenant.
#[derive(Debug, Clone, Copy)]
enum Msg {
    /// Ask for `want` more slots (0: renew).
    Acquire { want: u32 },
    /// Give `slots` back to `region`, which counts them.
    Return { region: u32, slots: u32 },
}

/// A tenant's messages from the book marking one in flight to `Book::done`: the shell's
/// acquire task or its part of a renewal round.
#[derive(Debug, Default)]
struct Turn {
    /// What is still to go, in order.
    next: VecDeque<Msg>,
    /// The message awaiting its answer, and when it was sent.
    current: Option<(Msg, Nanos)>,
    /// Part of the renewal round in progress (it holds one of the round's places).
    round: bool,
}

/// The renewal round in progress.
#[derive(Debug, Default)]
struct Round {
    /// Tenants whose turn in it has not started, in order.
    left: VecDeque<u32>,
    /// Tenants whose turn in it is under way.
    busy: usize,
    /// A tick came meanwhile: the next round starts when this one ends.
    due: bool,
}

/// One POP's leases.
#[derive(Debug, Default)]
pub(super) struct PopLeases {
    /// Per tenant (ordered: rounds go through them in a fixed order).
    books: BTreeMap<u32, Book<u32>>,
    answers: Answers,
    /// The tenants with a message in flight or to send.
    turns: BTreeMap<u32, Turn>,
    /// Tenants whose next message can go now, in order.
    ready: VecDeque<u32>,
    round: Option<Round>,
}

impl PopLeases {
    /// Draws a slot of `tenant`'s lease at `at` (stalled draws while lease messages go
    /// unanswered), and starts an acquire when the book wants one.
    pub fn draw(&mut self, at: Instant, tenant: u32, t: &Terms) -> bool {
        let stalled = self.answers.stalled(at, t.renew);
        let b = self.books.entry(tenant).or_insert_with(|| Book::new(at));
        let drawn = if stalled {
            b.draw_stalled(at, &t.rule)
        } else {
            b.draw(at, &t.rule)
        };
        if let Some(want) = b.wants(at, &t.rule) {
            self.start(tenant, Msg::Acquire { want }, false);
        }
        drawn
    }

    /// A drawn slot of `tenant` is free again.
    pub fn finish(&mut self, tenant: u32) {
        if let Some(b) = self.books.get_mut(&tenant) {
            b.finish();
        }
    }

    /// Starts `tenant`'s turn with `first` (its book marked it in flight).
    fn start(&mut self, tenant: u32, first: Msg, round: bool) {
        let turn = Turn {
            next: VecDeque::from([first]),
            current: None,
            round,
        };
        self.turns.insert(tenant, turn);
        self.ready.push_back(tenant);
    }

    /// A renewal tick at `at`: starts a round, or marks the next one due.
    fn tick(&mut self, at: Instant, rule: &HoldRule) {
        match &mut self.round {
            Some(r) => r.due = true,
            None => {
                self.round = Some(Round {
                    left: self.books.keys().copied().collect(),
                    ..Round::default()
                });
                self.fill_round(at, rule);
            }
        }
    }

    /// Starts round turns while the round has places (`ROUND_CONCURRENCY`), each tenant
    /// settled when its turn comes (`Book::round`, the shell's `renew_tenant`); ends the
    /// round when every turn is over, starting the next if one is due.
    fn fill_round(&mut self, at: Instant, rule: &HoldRule) {
        loop {
            let Some(r) = &mut self.round else {
                return;
            };
            if r.busy >= lease::ROUND_CONCURRENCY {
                return;
            }
            let Some(tenant) = r.left.pop_front() else {
                if r.busy > 0 {
                    return;
                }
                let due = r.due;
                self.round = None;
                self.books.retain(|_, b| !b.empty());
                if due {
                    self.tick(at, rule);
                }
                return;
            };
            let Some(step) = self.books.get_mut(&tenant).and_then(|b| b.round(at, rule)) else {
                continue;
            };
            r.busy += 1;
            let mut next = VecDeque::new();
            if let Some((region, slots)) = step.give_back {
                next.push_back(Msg::Return { region, slots });
            }
            if step.renew {
                next.push_back(Msg::Acquire { want: 0 });
            }
            self.turns.insert(
                tenant,
                Turn {
                    next,
                    current: None,
                    round: true,
                },
            );
            self.ready.push_back(tenant);
        }
    }

    /// `tenant`'s next message to send, or `None` when its turn is over (`Book::done`; a
    /// turn that ran low meanwhile goes on with an acquire).
    fn next(&mut self, at: Instant, tenant: u32, rule: &HoldRule) -> Option<Msg> {
        let turn = self.turns.get_mut(&tenant)?;
        if let Some(m) = turn.next.pop_front() {
            return Some(m);
        }
        if let Some(want) = self.books.get_mut(&tenant).and_then(|b| b.done(at, rule)) {
            return Some(Msg::Acquire { want });
        }
        let round = self.turns.remove(&tenant).is_some_and(|t| t.round);
        if round && let Some(r) = &mut self.round {
            r.busy -= 1;
            self.fill_round(at, rule);
        }
        None
    }

    /// `tenant`'s message in flight ended: returns it and when it was sent, and readies
    /// the tenant's next.
    fn ended(&mut self, tenant: u32) -> Option<(Msg, Nanos)> {
        let current = self.turns.get_mut(&tenant)?.current.take();
        self.ready.push_back(tenant);
        current
    }
}

impl Shard<'_> {
    /// `pop`'s renewal timer: starts a round unless one is still in progress.
    pub(super) fn lease_tick(&mut self, now: Nanos, pop: u32) {
        let w = self.w;
        let next = now + w.leases.renew_ns();
        if next < w.end {
            self.queue.push(next, Event::LeaseTick { pop });
        }
        let at = self.at(now);
        let i = self.local_pop(pop);
        self.pops[i].leases.tick(at, &w.leases.rule);
        self.send_leases(now, pop);
    }

    /// Sends `pop`'s lease messages that can go now: each ready tenant's next.
    pub(super) fn send_leases(&mut self, now: Nanos, pop: u32) {
        let w = self.w;
        let at = self.at(now);
        let i = self.local_pop(pop);
        self.refresh_views(now, pop);
        while let Some(tenant) = self.pops[i].leases.ready.pop_front() {
            let p = &mut self.pops[i];
            let Some(msg) = p.leases.next(at, tenant, &w.leases.rule) else {
                continue;
            };
            let (region, slots, back) = match msg {
                Msg::Acquire { want } => {
                    let Some(region) = self.chooser.choose(now, pop, &p.views) else {
                        // No region to ask: the request fails at once, unanswered.
                        p.leases.answers.sent(at);
                        p.leases.answers.failed(at);
                        p.leases.ready.push_back(tenant);
                        continue;
                    };
                    if want > 0 {
                        self.lease_counts.acquires += 1;
                    }
                    (region, want, false)
                }
                Msg::Return { region, slots } => {
                    // Only over a live connection: a region the POP knows is gone
                    // reclaims the slots when the lease expires instead.
                    let gone = w
                        .down_since(region, now)
                        .is_some_and(|d| now >= d + w.c.failure_detect);
                    if gone {
                        p.leases.ready.push_back(tenant);
                        continue;
                    }
                    (region, slots, true)
                }
            };
            let p = &mut self.pops[i];
            p.leases.answers.sent(at);
            if let Some(turn) = p.leases.turns.get_mut(&tenant) {
                turn.current = Some((msg, now));
            }
            if let Some(down) = w.down_since(region, now) {
                // Sent to a silently dead region: nothing answers until the POP's
                // liveness timeout.
                let noticed = (down + w.c.failure_detect).max(now);
                self.queue.push(noticed, Event::LeaseFailed { pop, tenant });
                continue;
            }
            let arrive = now + w.rtt(pop, region) / 2;
            let event = Event::LeaseAt {
                region,
                pop,
                tenant,
                slots,
                back,
            };
            self.send(w.shard_of_region(region), arrive, event);
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
            return self.send(
                to,
                noticed.max(answered),
                Event::LeaseFailed { pop, tenant },
            );
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
            tenant,
            held,
            granted,
        };
        self.send(to, answered, event);
    }

    /// `region`'s answer to `tenant`'s message reaches `pop`: it counts `held` slots for
    /// the POP, `granted` of them just now. Applies it to the book (`Book::granted`) and
    /// sends the tenant's next message.
    pub(super) fn lease_answer(&mut self, now: Nanos, pop: u32, answer: Answer) {
        let Answer {
            region,
            tenant,
            held,
            granted,
        } = answer;
        let w = self.w;
        let at = self.at(now);
        let i = self.local_pop(pop);
        let l = &mut self.pops[i].leases;
        let Some((msg, sent)) = l.ended(tenant) else {
            return;
        };
        let sent_at = self.base + Duration::from_nanos(sent);
        l.answers.answered(sent_at, at);
        if let Msg::Acquire { want } = msg
            && let Some(b) = l.books.get_mut(&tenant)
        {
            if want > 0 && granted > 0 {
                self.lease_counts.grants += 1;
                self.lease_counts.slots_granted += u64::from(granted);
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
            if let Some((old, slots)) = b.granted(region, held, sent_at + w.leases.ttl)
                && let Some(turn) = l.turns.get_mut(&tenant)
            {
                // The lease moved: the old region's free slots go back first.
                turn.next.push_front(Msg::Return { region: old, slots });
            }
        }
        self.send_leases(now, pop);
    }

    /// `pop`'s lease message of `tenant` got no answer: the tenant's next one goes.
    pub(super) fn lease_failed(&mut self, now: Nanos, pop: u32, tenant: u32) {
        let i = self.local_pop(pop);
        let l = &mut self.pops[i].leases;
        if let Some((_, sent)) = l.ended(tenant) {
            l.answers.failed(self.base + Duration::from_nanos(sent));
        }
        self.send_leases(now, pop);
    }
}

/// A region's answer to a lease message of `tenant`: the region counts `held` slots for the
/// POP, `granted` of them just now.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    pub region: u32,
    pub tenant: u32,
    pub held: u32,
    pub granted: u32,
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
