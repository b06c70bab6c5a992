//! Region choice at a POP: which region the next forward goes to.
//!
//! Owns, per region, a smoothed RTT (EWMA of samples), health (a decaying error score
//! and a circuit that opens on repeated failures and lets one probe through per interval
//! once its open time is over), and pressure (the region said it is busy: back off for a
//! time that doubles with each consecutive report, up to a cap). Never performs I/O and
//! never reads a clock: the POP (and the simulator) feed it events with `now` and ask
//! [`RegionChoice::choose`] for a region.
//!
//! A region can also be *down*: the POP lost its connection to it (the region went
//! silent, see [`super::liveness`]) or could not connect, and reconnects in the
//! background. A down region is never chosen until [`RegionChoice::handle_up`]: new
//! forwards go to another region, or, when every listed region is down,
//! [`RegionChoice::choose`] returns `None` and the POP answers 503 at once.
//!
//! Choice: among usable regions (circuit closed, or due for a probe; not backed off) the
//! lowest smoothed RTT wins (the POP samples each connection's lowest RTT, the path's delay,
//! so a busy region's slow acknowledgements do not count as distance), where RTTs within [`RegionChoiceConfig::rtt_margin`] of the
//! lowest tie; regions without an RTT sample yet rank after measured ones; ties go to
//! the earlier region in discovery order. When no region is usable the least-bad one is
//! tried (the one usable soonest, then the lowest error score, then discovery order), so
//! a POP never refuses to forward just because every region had a bad moment.
//!
//! Affinity: a request with an `x-strata-affinity` key goes to the usable region the key
//! wins by rendezvous hashing ([`RegionChoice::choose_keyed`]), not the fastest one, so a
//! key's warm, state-bearing reactor is at the region its next request reaches.

use std::time::{Duration, Instant};

/// Tuning of [`RegionChoice`].
#[derive(Debug, Clone, PartialEq)]
pub struct RegionChoiceConfig {
    /// Weight of a new RTT sample in the smoothed RTT (`0..=1`). Default 0.25.
    pub rtt_weight: f64,
    /// How much faster a region must be to win over one earlier in discovery order:
    /// regions within this of the lowest smoothed RTT count as tied. Keeps the choice from
    /// flapping between regions whose RTTs differ by noise or load. Default 5 ms.
    pub rtt_margin: Duration,
    /// Half-life of the error score. Default 10 s.
    pub error_half_life: Duration,
    /// Error score at which the circuit opens. Default 3.0 (three quick failures).
    pub open_at_score: f64,
    /// How long a circuit first stays open; doubles with each failed probe. Default 1 s.
    pub open_for: Duration,
    /// Longest a circuit stays open. Default 30 s.
    pub max_open_for: Duration,
    /// First back-off after a pressure report; doubles with each consecutive report.
    /// Default 500 ms.
    pub backoff: Duration,
    /// Longest back-off. Default 10 s.
    pub max_backoff: Duration,
}

impl Default for RegionChoiceConfig {
    fn default() -> Self {
        Self {
            rtt_weight: 0.25,
            rtt_margin: Duration::from_millis(5),
            error_half_life: Duration::from_secs(10),
            open_at_score: 3.0,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the POP knows about one region.
#[derive(Debug, Clone, PartialEq)]
struct RegionState<K> {
    key: K,
    /// Smoothed RTT; `None` before the first sample.
    rtt: Option<Duration>,
    /// Failures, decaying with [`RegionChoiceConfig::error_half_life`].
    error_score: f64,
    /// When `error_score` was last brought up to date.
    scored_at: Option<Instant>,
    /// `Some(until)`: the circuit is open; at `until` one probe may go through.
    open_until: Option<Instant>,
    /// Consecutive openings, for the doubling of the open time.
    open_level: u32,
    /// The region said it is under pressure: avoid it until then.
    backoff_until: Option<Instant>,
    /// Consecutive pressure reports, for the doubling of the back-off.
    backoff_level: u32,
    /// No connection: never chosen until the POP reconnects.
    down: bool,
}

/// Per-region health and RTT, and the choice of the region to forward to. `K` names a
/// region (a socket address at the POP, an index in the simulator).
#[derive(Debug, Clone)]
pub struct RegionChoice<K> {
    config: RegionChoiceConfig,
    /// In discovery order, which breaks ties.
    regions: Vec<RegionState<K>>,
}

fn doubled(base: Duration, level: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << level.min(20)).min(cap)
}

impl<K: Clone + PartialEq> RegionState<K> {
    fn new(key: K) -> Self {
        Self {
            key,
            rtt: None,
            error_score: 0.0,
            scored_at: None,
            open_until: None,
            open_level: 0,
            backoff_until: None,
            backoff_level: 0,
            down: false,
        }
    }

    /// The error score decayed to `now`. A clock that went backwards decays nothing.
    fn score_at(&self, now: Instant, half_life: Duration) -> f64 {
        let Some(at) = self.scored_at else {
            return self.error_score;
        };
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        let half = half_life.as_secs_f64().max(f64::EPSILON);
        self.error_score * 0.5f64.powf(elapsed / half)
    }

    fn rescore(&mut self, now: Instant, half_life: Duration) {
        self.error_score = self.score_at(now, half_life);
        // Never move the reference point backwards: a clock jump back must not make the
        // next update decay the same interval twice.
        self.scored_at = Some(self.scored_at.map_or(now, |at| at.max(now)));
    }

    fn backed_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|until| now < until)
    }

    fn circuit_blocks(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    /// The earliest instant this region becomes usable (`now` when it is).
    fn usable_from(&self, now: Instant) -> Instant {
        [self.open_until, self.backoff_until]
            .into_iter()
            .flatten()
            .fold(now, Instant::max)
    }
}

impl<K: Clone + PartialEq> RegionChoice<K> {
    /// A policy with no regions yet.
    pub fn new(config: RegionChoiceConfig) -> Self {
        Self {
            config,
            regions: Vec::new(),
        }
    }

    /// Replaces the region list (discovery order), keeping what is known about regions
    /// that stay listed and forgetting the rest.
    pub fn set_regions(&mut self, listed: &[K]) {
        let mut old = std::mem::take(&mut self.regions);
        for key in listed {
            if self.regions.iter().any(|r| r.key == *key) {
                continue;
            }
            let state = match old.iter().position(|r| r.key == *key) {
                Some(i) => old.swap_remove(i),
                None => RegionState::new(key.clone()),
            };
            self.regions.push(state);
        }
    }

    /// The listed regions, in discovery order.
    pub fn regions(&self) -> impl Iterator<Item = &K> {
        self.regions.iter().map(|r| &r.key)
    }

    fn state(&mut self, key: &K) -> Option<&mut RegionState<K>> {
        self.regions.iter_mut().find(|r| r.key == *key)
    }

    /// An RTT sample for `key` (the QUIC connection's estimate, or a ping).
    pub fn handle_rtt(&mut self, key: &K, sample: Duration) {
        let weight = self.config.rtt_weight.clamp(0.0, 1.0);
        if let Some(r) = self.state(key) {
            r.rtt = Some(match r.rtt {
                None => sample,
                Some(old) => old.mul_f64(1.0 - weight) + sample.mul_f64(weight),
            });
        }
    }

    /// `key` answered a request: a probe closes the circuit; the error score halves.
    pub fn handle_success(&mut self, now: Instant, key: &K) {
        let half_life = self.config.error_half_life;
        if let Some(r) = self.state(key) {
            r.rescore(now, half_life);
            r.error_score /= 2.0;
            r.open_until = None;
            // Keep the doubling for a region that keeps flapping; forget it once the
            // region has been quiet long enough for its score to fade.
            if r.error_score < 1.0 {
                r.open_level = 0;
            }
        }
    }

    /// `key` failed a request or a connection attempt. Enough failures in a short time
    /// (or a failed probe) open the circuit.
    pub fn handle_failure(&mut self, now: Instant, key: &K) {
        let config = self.config.clone();
        if let Some(r) = self.state(key) {
            r.rescore(now, config.error_half_life);
            r.error_score += 1.0;
            let probing = r.open_until.is_some();
            if probing || r.error_score >= config.open_at_score {
                let open_for = doubled(config.open_for, r.open_level, config.max_open_for);
                r.open_until = Some(now + open_for);
                r.open_level = r.open_level.saturating_add(1);
            }
        }
    }

    /// `key` cannot be reached at all (no connection could be established): open the
    /// circuit at once rather than waiting for the score.
    pub fn handle_unreachable(&mut self, now: Instant, key: &K) {
        let config = self.config.clone();
        if let Some(r) = self.state(key) {
            r.rescore(now, config.error_half_life);
            r.error_score = r.error_score.max(config.open_at_score);
            let open_for = doubled(config.open_for, r.open_level, config.max_open_for);
            r.open_until = Some(now + open_for);
            r.open_level = r.open_level.saturating_add(1);
        }
    }

    /// The POP has no connection to `key` and is reconnecting in the background: it is
    /// not chosen until [`Self::handle_up`].
    pub fn handle_down(&mut self, key: &K) {
        if let Some(r) = self.state(key) {
            r.down = true;
        }
    }

    /// The POP is connected to `key` again: it may be chosen, with a clean circuit (the
    /// new connection has not failed yet) and its back-off and RTT as they were.
    pub fn handle_up(&mut self, key: &K) {
        if let Some(r) = self.state(key) {
            r.down = false;
            r.open_until = None;
        }
    }

    /// Whether `key` is marked down.
    pub fn is_down(&self, key: &K) -> bool {
        self.regions.iter().any(|r| r.key == *key && r.down)
    }

    /// `key` replied and reported its load: `busy` when it is under pressure, `spare`
    /// execution slots free. Pressure backs off for a doubling time; no spare slot backs
    /// off for the base time only (the region is full, not yet queueing); a calm reply
    /// after the back-off ended resets the doubling. The back-off expires by itself, so a
    /// region is never avoided for good on a stale report.
    pub fn handle_pressure(&mut self, now: Instant, key: &K, busy: bool, spare: u32) {
        let (base, cap) = (self.config.backoff, self.config.max_backoff);
        if let Some(r) = self.state(key) {
            if spare == 0 && !busy {
                let until = now + base;
                r.backoff_until = Some(r.backoff_until.map_or(until, |u| u.max(until)));
            }
            if busy {
                let backoff = doubled(base, r.backoff_level, cap);
                r.backoff_until = Some(now + backoff);
                r.backoff_level = r.backoff_level.saturating_add(1);
            } else if !r.backed_off(now) {
                r.backoff_level = 0;
            }
        }
    }

    /// The region for the next request, skipping `exclude` (regions already tried for
    /// it) and regions marked down. `None` when no region is listed outside those.
    ///
    /// A region whose circuit is due for a probe counts as usable; choosing it re-arms
    /// the circuit for another `open_for`, so one probe goes through per interval.
    pub fn choose(&mut self, now: Instant, exclude: &[K]) -> Option<K> {
        let half_life = self.config.error_half_life;
        let candidates = self
            .regions
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.down && !exclude.contains(&r.key));
        let usable = candidates
            .clone()
            .filter(|(_, r)| !r.circuit_blocks(now) && !r.backed_off(now));
        let fastest = usable.clone().filter_map(|(_, r)| r.rtt).min();
        let margin = self.config.rtt_margin;
        let healthy = usable
            // Measured regions within the margin of the fastest tie; unmeasured ones rank
            // after every measured one. Ties go to discovery order.
            .min_by_key(|(i, r)| {
                let tied = match (r.rtt, fastest) {
                    (Some(rtt), Some(best)) => rtt <= best.saturating_add(margin),
                    _ => false,
                };
                let rank = if tied { None } else { r.rtt };
                (r.rtt.is_none(), !tied, rank, *i)
            })
            .map(|(i, _)| i);
        let pick = healthy.or_else(|| {
            candidates
                .min_by(|(i, a), (j, b)| {
                    a.usable_from(now)
                        .cmp(&b.usable_from(now))
                        .then(
                            a.score_at(now, half_life)
                                .total_cmp(&b.score_at(now, half_life)),
                        )
                        .then(i.cmp(j))
                })
                .map(|(i, _)| i)
        })?;
        Some(self.take(now, pick))
    }

    /// As [`Self::choose`] for a request with an affinity `key`: among the usable regions
    /// (not down, not excluded, circuit closed or due for a probe, not backed off) the one
    /// the key hashes to by rendezvous hashing over the regions' `identity` bytes, so a
    /// key's state-bearing instance is found at the same region again, from any POP that
    /// lists the same regions. Adding or losing a region moves only the keys it won. When
    /// no region is usable, the choice is [`Self::choose`]'s.
    pub fn choose_keyed(
        &mut self,
        now: Instant,
        exclude: &[K],
        key: &[u8],
        identity: impl Fn(&K) -> Vec<u8>,
    ) -> Option<K> {
        let usable: Vec<usize> = (0..self.regions.len())
            .filter(|&i| {
                let r = &self.regions[i];
                !r.down && !exclude.contains(&r.key) && !r.circuit_blocks(now) && !r.backed_off(now)
            })
            .collect();
        let ids: Vec<Vec<u8>> = usable
            .iter()
            .map(|&i| identity(&self.regions[i].key))
            .collect();
        match super::affinity::choose(key, &ids) {
            Some(at) => Some(self.take(now, usable[at])),
            None => self.choose(now, exclude),
        }
    }

    /// Hands out region `pick`; a circuit due for a probe lets this request through and
    /// waits another interval for the next one.
    fn take(&mut self, now: Instant, pick: usize) -> K {
        let open_for = self.config.open_for;
        let r = &mut self.regions[pick];
        if r.open_until.is_some_and(|until| now >= until) {
            // Half-open: this request is the probe; the next one waits another interval.
            r.open_until = Some(now + open_for);
        }
        r.key.clone()
    }

    /// Whether no circuit is open or half-open and no back-off is pending at `now`: then
    /// [`RegionChoice::choose`] picks by RTT alone, changes nothing, and gives the same
    /// answer (for the same `exclude`) until the policy is told something new.
    pub fn is_settled(&self, now: Instant) -> bool {
        self.regions
            .iter()
            .all(|r| r.open_until.is_none() && !r.backed_off(now))
    }

    /// The next instant a region's state changes by itself (a circuit due for a probe or
    /// a back-off ending), for a driver that wants to wake up then.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.regions
            .iter()
            .flat_map(|r| [r.open_until, r.backoff_until])
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
#[path = "region_tests.rs"]
mod tests;
