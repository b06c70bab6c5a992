//! Where an invocation runs at a POP: locally when the function is popular and the POP
//! has room, otherwise at a region.
//!
//! Popularity is an exponentially decayed request count per function: each request adds
//! one and the score decays with time constant `window`, so with the default one-minute
//! window the score approximates "requests in the last minute". A function becomes local
//! when its score reaches `enter_score` and stops being local only when it falls below
//! `exit_score` (hysteresis, so a function near the bar does not flap). The table of
//! tracked functions is bounded; when full the least popular sixteenth is dropped.
//!
//! The popular set also has to fit the POP's memory budget: each local function costs its
//! artifact bytes plus its warm instances' memory ([`LocalState::cost_bytes`]), and the sum
//! over the popular set never exceeds [`PlacementConfig::memory_budget_mb`]. A function
//! that crosses the bar when the budget is full gets in only by displacing local functions
//! whose score is lower by more than [`PlacementConfig::displace_margin`] (lowest score
//! first, ties by key so the choice is deterministic); otherwise it is forwarded as
//! over-capacity. The margin is the hysteresis at the budget edge: two functions of about
//! the same rate never take turns being local. Functions pinned to the edge run locally
//! without being charged (the operator asked for it); pinned-to-region never are.
//!
//! The policy is generic over how a function is named: nodes key it by [`FunctionKey`]
//! with the standard (DoS-resistant) hasher, the simulator by a dense integer id with a
//! cheap hasher, so both drive the very same decision code.

use crate::model::{FunctionKey, Placement};
use serde::Deserialize;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

/// Tunables of [`PlacementPolicy`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// Decay time constant of the popularity score. Default 60 s.
    #[serde(with = "secs_f64")]
    pub window: Duration,
    /// Score at which a function starts running locally. Default 10.
    pub enter_score: f64,
    /// Score below which a local function goes back to being forwarded. Default 5.
    pub exit_score: f64,
    /// Most functions tracked at once. Default 10 000.
    pub max_tracked: usize,
    /// Memory the popular set may use at this POP (artifacts plus warm instances), in MiB.
    /// Default 2048.
    pub memory_budget_mb: u64,
    /// How much higher (as a fraction) a newcomer's score must be than a local function's
    /// to displace it when the budget is full. Default 0.25.
    pub displace_margin: f64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            enter_score: 10.0,
            exit_score: 5.0,
            max_tracked: 10_000,
            memory_budget_mb: 2048,
            displace_margin: 0.25,
        }
    }
}

mod secs_f64 {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)
    }
}

/// What the POP can offer right now for one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalState {
    /// The function's `placement` setting.
    pub placement: Placement,
    /// The POP knows the function (its code digest and config).
    pub known: bool,
    /// The function's code is compiled and ready at this POP.
    pub artifact_ready: bool,
    /// A local execution slot is free.
    pub slot_free: bool,
    /// What running the function here costs against the memory budget: its artifact
    /// bytes (once known) plus its warm instances' memory limits.
    pub cost_bytes: u64,
}

/// Why an invocation is sent to a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardReason {
    /// The function is not popular enough at this POP.
    Rare,
    /// The function's config pins it to the region.
    Pinned,
    /// The POP does not know the function yet (first sight or expired metadata).
    Unknown,
    /// Popular, but its code is not ready here yet (being fetched).
    NotReady,
    /// Popular, but every local slot is busy or it does not fit the memory budget: spill.
    OverCapacity,
}

impl ForwardReason {
    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rare => "rare",
            Self::Pinned => "pinned",
            Self::Unknown => "unknown",
            Self::NotReady => "not_ready",
            Self::OverCapacity => "over_capacity",
        }
    }
}

/// The placement of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run at this POP.
    Local,
    /// Send to a region.
    Forward(ForwardReason),
}

/// A decayed request count: `value` as of `at`.
#[derive(Debug, Clone, Copy)]
struct Score {
    value: f64,
    at: Instant,
}

impl Score {
    fn decayed(&self, now: Instant, window: Duration) -> f64 {
        // A clock that went backwards (it cannot with Instant, but the simulator could feed
        // one) is treated as no time passing.
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * (-dt / window.as_secs_f64()).exp()
    }

    /// A lower bound of [`Score::decayed`] that needs no `exp` (`e^-x >= 1 - x`), slightly
    /// lowered so that it stays below the computed value despite rounding.
    fn decayed_at_least(&self, now: Instant, window: Duration) -> f64 {
        let x = now.saturating_duration_since(self.at).as_secs_f64() / window.as_secs_f64();
        self.value * (1.0 - x) * (1.0 - 1e-9)
    }

    fn bump(&mut self, now: Instant, window: Duration) {
        self.value = self.decayed(now, window) + 1.0;
        self.at = now;
    }
}

/// A tracked function: its score, or where its score lives while it is local.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// Not in the popular set.
    Tracked(Score),
    /// In the popular set, at this index of `PlacementPolicy::local`.
    Local(u32),
}

/// A function of the popular set.
#[derive(Debug, Clone)]
struct LocalEntry<K> {
    key: K,
    score: Score,
    /// What it is charged against the budget (its last known cost).
    cost: u64,
}

/// Where [`PlacementPolicy::update_popularity`] leaves a function.
enum Popularity {
    /// Under the bar (or fell below the exit score).
    Rare,
    /// Over the bar but the memory budget has no room for it.
    NoRoom,
    /// In the popular set.
    Local,
}

/// Popularity-based placement at a POP. See the module docs.
///
/// `K` names a function (nodes use [`FunctionKey`]); `S` hashes it for the tracked table
/// (nodes use the standard, DoS-resistant [`RandomState`]: function names come from
/// tenants).
///
/// The popular set's scores live in one contiguous `local` array rather than in the hash
/// table, so deciding whether a newcomer can displace anyone is a scan of that array (with
/// no `exp` for the clearly stronger ones), not a table lookup per local function.
#[derive(Debug)]
pub struct PlacementPolicy<K = FunctionKey, S = RandomState> {
    config: PlacementConfig,
    entries: HashMap<K, Entry, S>,
    /// The popular set: at most budget / smallest cost of them.
    local: Vec<LocalEntry<K>>,
    /// Sum of the local entries' costs; never above the budget.
    committed: u64,
}

impl PlacementPolicy {
    /// A policy with `config` and no history, keyed by [`FunctionKey`].
    pub fn new(config: PlacementConfig) -> Self {
        Self::with_hasher(config, RandomState::new())
    }
}

impl<K: Eq + Hash + Ord + Clone, S: BuildHasher> PlacementPolicy<K, S> {
    /// A policy with `config` and no history, keyed by `K` and hashed with `hasher`.
    pub fn with_hasher(config: PlacementConfig, hasher: S) -> Self {
        Self {
            config,
            entries: HashMap::with_hasher(hasher),
            local: Vec::new(),
            committed: 0,
        }
    }

    /// Bytes of the memory budget the popular set uses now (never above the budget).
    pub fn committed_bytes(&self) -> u64 {
        self.committed
    }

    /// The memory budget in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.config.memory_budget_mb.saturating_mul(1 << 20)
    }

    /// Functions tracked now (never above `max_tracked`).
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// Records one request for `key` at `now`.
    pub fn handle_request(&mut self, now: Instant, key: &K) {
        let window = self.config.window;
        match self.entries.get_mut(key) {
            Some(Entry::Tracked(s)) => return s.bump(now, window),
            Some(Entry::Local(i)) => return self.local[*i as usize].score.bump(now, window),
            None => {}
        }
        if self.entries.len() >= self.config.max_tracked {
            self.evict_least_popular(now);
        }
        self.entries.insert(
            key.clone(),
            Entry::Tracked(Score {
                value: 1.0,
                at: now,
            }),
        );
    }

    /// The popularity score of `key` at `now` (about "requests in the last window").
    pub fn score(&self, now: Instant, key: &K) -> f64 {
        self.entries
            .get(key)
            .map_or(0.0, |e| self.score_of(e).decayed(now, self.config.window))
    }

    /// Whether `key` is currently in the popular set (its hysteresis state).
    pub fn is_popular(&self, key: &K) -> bool {
        matches!(self.entries.get(key), Some(Entry::Local(_)))
    }

    /// Decides where the next invocation of `key` runs, given what the POP can offer.
    pub fn decide(&mut self, now: Instant, key: &K, local: LocalState) -> Decision {
        match local.placement {
            Placement::Region => {
                // A function re-pinned while local gives its budget back.
                self.demote(key);
                return Decision::Forward(ForwardReason::Pinned);
            }
            Placement::Edge => self.demote(key),
            Placement::Auto => match self.update_popularity(now, key, local.cost_bytes) {
                Popularity::Rare => return Decision::Forward(ForwardReason::Rare),
                Popularity::NoRoom => return Decision::Forward(ForwardReason::OverCapacity),
                Popularity::Local => {}
            },
        }
        if !local.known {
            Decision::Forward(ForwardReason::Unknown)
        } else if !local.artifact_ready {
            Decision::Forward(ForwardReason::NotReady)
        } else if !local.slot_free {
            Decision::Forward(ForwardReason::OverCapacity)
        } else {
            Decision::Local
        }
    }

    /// Whether a function's code should be prepared at this POP: it is popular (or pinned
    /// to the edge) but not ready yet.
    pub fn wants_artifact(&self, key: &K, local: LocalState) -> bool {
        let wanted = match local.placement {
            Placement::Region => false,
            Placement::Edge => true,
            Placement::Auto => self.is_popular(key),
        };
        wanted && local.known && !local.artifact_ready
    }

    fn score_of(&self, e: &Entry) -> Score {
        match *e {
            Entry::Tracked(s) => s,
            Entry::Local(i) => self.local[i as usize].score,
        }
    }

    /// Moves `key` in or out of the popular set by its score and the budget.
    fn update_popularity(&mut self, now: Instant, key: &K, cost: u64) -> Popularity {
        let (enter, exit, window) = (
            self.config.enter_score,
            self.config.exit_score,
            self.config.window,
        );
        let Some(&e) = self.entries.get(key) else {
            return Popularity::Rare;
        };
        let score = self.score_of(&e).decayed(now, window);
        if let Entry::Local(i) = e {
            let old_cost = self.local[i as usize].cost;
            if score < exit {
                self.demote(key);
                return Popularity::Rare;
            }
            if cost <= old_cost {
                self.local[i as usize].cost = cost;
                self.committed -= old_cost - cost;
                return Popularity::Local;
            }
            // Its cost grew (its artifact became known, or more warm instances): it stays
            // only if the growth fits, making room as a newcomer would.
            self.demote(key);
        } else if score < enter {
            return Popularity::Rare;
        }
        if self.make_room(now, key, score, cost) {
            self.promote(key, cost);
            Popularity::Local
        } else {
            Popularity::NoRoom
        }
    }

    /// Frees budget for `cost` bytes by demoting local functions (stale ones first, then
    /// ones `score` beats by the margin, lowest first). Demotes nothing and returns false
    /// when that cannot free enough.
    fn make_room(&mut self, now: Instant, key: &K, score: f64, cost: u64) -> bool {
        let budget = self.budget_bytes();
        if cost > budget {
            return false;
        }
        if self.committed + cost <= budget {
            return true;
        }
        let (exit, window, margin) = (
            self.config.exit_score,
            self.config.window,
            self.config.displace_margin,
        );
        // A local function is a victim when its score is below the exit score or the
        // newcomer beats it by the margin. Most are clearly not: their lower bound already
        // says so, without computing the exact decay.
        let clearly_safe = |lb: f64| lb >= exit && score <= lb * (1.0 + margin) * (1.0 - 1e-9);
        let mut victims: Vec<(f64, &K, u64)> = Vec::new();
        let mut freeable = 0;
        for l in &self.local {
            if &l.key == key || clearly_safe(l.score.decayed_at_least(now, window)) {
                continue;
            }
            let s = l.score.decayed(now, window);
            if s < exit || score > s * (1.0 + margin) {
                victims.push((s, &l.key, l.cost));
                freeable += l.cost;
            }
        }
        if self.committed - freeable + cost > budget {
            return false;
        }
        victims.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let mut freed = 0;
        let mut chosen = Vec::new();
        for (_, k, c) in victims {
            if self.committed - freed + cost <= budget {
                break;
            }
            freed += c;
            chosen.push(k.clone());
        }
        for k in &chosen {
            self.demote(k);
        }
        true
    }

    fn promote(&mut self, key: &K, cost: u64) {
        if let Some(e) = self.entries.get_mut(key)
            && let Entry::Tracked(score) = *e
        {
            *e = Entry::Local(self.local.len() as u32);
            self.local.push(LocalEntry {
                key: key.clone(),
                score,
                cost,
            });
            self.committed += cost;
        }
    }

    fn demote(&mut self, key: &K) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let Entry::Local(i) = *e else {
            return;
        };
        let gone = self.local.swap_remove(i as usize);
        *e = Entry::Tracked(gone.score);
        self.committed -= gone.cost;
        // The last local entry moved into the hole: point its table entry at it.
        if let Some(moved) = self.local.get(i as usize)
            && let Some(m) = self.entries.get_mut(&moved.key)
        {
            *m = Entry::Local(i);
        }
    }

    /// Forgets the least popular sixteenth of the table (at least one entry), lowest score
    /// first, ties by key: one pass per batch, so a flood of new names costs amortized
    /// O(16) per name instead of a full scan each.
    fn evict_least_popular(&mut self, now: Instant) {
        let window = self.config.window;
        let batch = (self.entries.len() / 16).max(1);
        let mut scored: Vec<(f64, &K)> = self
            .entries
            .iter()
            .map(|(k, e)| (self.score_of(e).decayed(now, window), k))
            .collect();
        if batch < scored.len() {
            scored.select_nth_unstable_by(batch, |a, b| {
                a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1))
            });
            scored.truncate(batch);
        }
        // Only the evicted keys are cloned (a node's keys are two strings).
        let victims: Vec<K> = scored.into_iter().map(|(_, k)| k.clone()).collect();
        for k in victims {
            self.demote(&k);
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
