//! Where an invocation runs at a POP: locally when the function is popular and the POP
//! has room, otherwise at a region.
//!
//! Popularity is an exponentially decayed request count per function: each request adds
//! one and the score decays with time constant `window`, so with the default one-minute
//! window the score approximates "requests in the last minute". A function becomes local
//! when its score reaches `enter_score` and stops being local only when it falls below
//! `exit_score` (hysteresis, so a function near the bar does not flap). The table of
//! tracked functions is bounded; when full the least popular entry is dropped.
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
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            enter_score: 10.0,
            exit_score: 5.0,
            max_tracked: 10_000,
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
    /// Popular and ready, but every local slot is busy: spill.
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

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    at: Instant,
    local: bool,
}

impl Entry {
    fn decayed(&self, now: Instant, window: Duration) -> f64 {
        // A clock that went backwards (it cannot with Instant, but the simulator could feed
        // one) is treated as no time passing.
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.score * (-dt / window.as_secs_f64()).exp()
    }
}

/// Popularity-based placement at a POP. See the module docs.
///
/// `K` names a function (nodes use [`FunctionKey`]); `S` hashes it for the tracked table
/// (nodes use the standard, DoS-resistant [`RandomState`]: function names come from
/// tenants).
#[derive(Debug)]
pub struct PlacementPolicy<K = FunctionKey, S = RandomState> {
    config: PlacementConfig,
    entries: HashMap<K, Entry, S>,
}

impl PlacementPolicy {
    /// A policy with `config` and no history, keyed by [`FunctionKey`].
    pub fn new(config: PlacementConfig) -> Self {
        Self::with_hasher(config, RandomState::new())
    }
}

impl<K: Eq + Hash + Clone, S: BuildHasher> PlacementPolicy<K, S> {
    /// A policy with `config` and no history, keyed by `K` and hashed with `hasher`.
    pub fn with_hasher(config: PlacementConfig, hasher: S) -> Self {
        Self {
            config,
            entries: HashMap::with_hasher(hasher),
        }
    }

    /// Records one request for `key` at `now`.
    pub fn handle_request(&mut self, now: Instant, key: &K) {
        let window = self.config.window;
        if let Some(e) = self.entries.get_mut(key) {
            e.score = e.decayed(now, window) + 1.0;
            e.at = now;
            return;
        }
        if self.entries.len() >= self.config.max_tracked {
            self.evict_least_popular(now);
        }
        self.entries.insert(
            key.clone(),
            Entry {
                score: 1.0,
                at: now,
                local: false,
            },
        );
    }

    /// The popularity score of `key` at `now` (about "requests in the last window").
    pub fn score(&self, now: Instant, key: &K) -> f64 {
        self.entries
            .get(key)
            .map_or(0.0, |e| e.decayed(now, self.config.window))
    }

    /// Whether `key` is currently in the popular set (its hysteresis state).
    pub fn is_popular(&self, key: &K) -> bool {
        self.entries.get(key).is_some_and(|e| e.local)
    }

    /// Decides where the next invocation of `key` runs, given what the POP can offer.
    pub fn decide(&mut self, now: Instant, key: &K, local: LocalState) -> Decision {
        let popular = self.update_popularity(now, key);
        match local.placement {
            Placement::Region => return Decision::Forward(ForwardReason::Pinned),
            Placement::Edge => {}
            Placement::Auto if !popular => return Decision::Forward(ForwardReason::Rare),
            Placement::Auto => {}
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

    fn update_popularity(&mut self, now: Instant, key: &K) -> bool {
        let (enter, exit, window) = (
            self.config.enter_score,
            self.config.exit_score,
            self.config.window,
        );
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        let score = e.decayed(now, window);
        e.local = if e.local {
            score >= exit
        } else {
            score >= enter
        };
        e.local
    }

    fn evict_least_popular(&mut self, now: Instant) {
        let window = self.config.window;
        let victim = self
            .entries
            .iter()
            .min_by(|a, b| {
                a.1.decayed(now, window)
                    .total_cmp(&b.1.decayed(now, window))
            })
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionName, TenantId};

    fn key(name: &str) -> FunctionKey {
        FunctionKey {
            tenant: TenantId::new("t").expect("valid"),
            name: FunctionName::new(name).expect("valid"),
        }
    }

    const READY: LocalState = LocalState {
        placement: Placement::Auto,
        known: true,
        artifact_ready: true,
        slot_free: true,
    };

    fn hit(p: &mut PlacementPolicy, now: Instant, k: &FunctionKey) -> Decision {
        p.handle_request(now, k);
        p.decide(now, k, READY)
    }

    #[test]
    fn a_function_seen_once_is_forwarded_as_rare() {
        let mut p = PlacementPolicy::new(PlacementConfig::default());
        let now = Instant::now();
        assert_eq!(
            hit(&mut p, now, &key("f")),
            Decision::Forward(ForwardReason::Rare)
        );
    }

    #[test]
    fn ten_requests_within_a_minute_make_a_function_local() {
        let mut p = PlacementPolicy::new(PlacementConfig::default());
        let t0 = Instant::now();
        let k = key("f");
        let mut last = Decision::Forward(ForwardReason::Rare);
        for i in 0..12 {
            last = hit(&mut p, t0 + Duration::from_millis(100 * i), &k);
        }
        assert_eq!(last, Decision::Local);
    }

    #[test]
    fn requests_spread_thinly_never_become_popular() {
        let mut p = PlacementPolicy::new(PlacementConfig::default());
        let t0 = Instant::now();
        let k = key("f");
        // One request every 30 s: the score settles near 1/(1-e^-0.5) ~ 2.5, under the bar.
        for i in 0..100 {
            let d = hit(&mut p, t0 + Duration::from_secs(30 * i), &k);
            assert_eq!(d, Decision::Forward(ForwardReason::Rare));
        }
    }

    #[test]
    fn hysteresis_keeps_a_popular_function_local_until_it_decays_below_exit() {
        let mut p = PlacementPolicy::new(PlacementConfig::default());
        let t0 = Instant::now();
        let k = key("f");
        for i in 0..12 {
            hit(&mut p, t0 + Duration::from_millis(i), &k);
        }
        // Score ~12: after 40 s it is ~12*e^(-2/3) ~ 6.2: below enter (10) but above exit (5).
        let t1 = t0 + Duration::from_secs(40);
        assert_eq!(p.decide(t1, &k, READY), Decision::Local);
        // After 80 s it is ~3.1: below exit, forwarded again.
        let t2 = t0 + Duration::from_secs(80);
        assert_eq!(
            p.decide(t2, &k, READY),
            Decision::Forward(ForwardReason::Rare)
        );
    }

    #[test]
    fn placement_pins_override_popularity() {
        let mut p = PlacementPolicy::new(PlacementConfig::default());
        let now = Instant::now();
        let k = key("f");
        p.handle_request(now, &k);
        let edge = LocalState {
            placement: Placement::Edge,
            ..READY
        };
        assert_eq!(p.decide(now, &k, edge), Decision::Local);
        for i in 0..20 {
            p.handle_request(now + Duration::from_millis(i), &k);
        }
        let region = LocalState {
            placement: Placement::Region,
            ..READY
        };
        assert_eq!(
            p.decide(now, &k, region),
            Decision::Forward(ForwardReason::Pinned)
        );
    }

    #[test]
    fn popular_but_not_ready_or_full_is_forwarded_with_the_reason() {
        let mut p = PlacementPolicy::new(PlacementConfig::default());
        let now = Instant::now();
        let k = key("f");
        for _ in 0..10 {
            p.handle_request(now, &k);
        }
        let unknown = LocalState {
            known: false,
            artifact_ready: false,
            ..READY
        };
        assert_eq!(
            p.decide(now, &k, unknown),
            Decision::Forward(ForwardReason::Unknown)
        );
        let not_ready = LocalState {
            artifact_ready: false,
            ..READY
        };
        assert_eq!(
            p.decide(now, &k, not_ready),
            Decision::Forward(ForwardReason::NotReady)
        );
        assert!(p.wants_artifact(&k, not_ready));
        let full = LocalState {
            slot_free: false,
            ..READY
        };
        assert_eq!(
            p.decide(now, &k, full),
            Decision::Forward(ForwardReason::OverCapacity)
        );
    }

    #[test]
    fn a_policy_keyed_by_dense_ids_decides_like_one_keyed_by_function_keys() {
        use std::hash::BuildHasherDefault;
        let mut by_key = PlacementPolicy::new(PlacementConfig::default());
        let mut by_id =
            PlacementPolicy::<u32, BuildHasherDefault<std::hash::DefaultHasher>>::with_hasher(
                PlacementConfig::default(),
                BuildHasherDefault::default(),
            );
        let t0 = Instant::now();
        let names = [key("a"), key("b")];
        for i in 0..60u32 {
            let f = i % 3 % 2;
            let now = t0 + Duration::from_millis(700 * u64::from(i));
            by_key.handle_request(now, &names[f as usize]);
            by_id.handle_request(now, &f);
            assert_eq!(
                by_key.decide(now, &names[f as usize], READY),
                by_id.decide(now, &f, READY)
            );
        }
    }

    #[test]
    fn the_tracked_table_is_bounded_and_keeps_the_popular() {
        let mut p = PlacementPolicy::new(PlacementConfig {
            max_tracked: 3,
            ..PlacementConfig::default()
        });
        let now = Instant::now();
        let hot = key("hot");
        for _ in 0..20 {
            p.handle_request(now, &hot);
        }
        for i in 0..100 {
            p.handle_request(now, &key(&format!("rare{i}")));
        }
        assert_eq!(p.entries.len(), 3);
        assert_eq!(p.decide(now, &hot, READY), Decision::Local);
    }
}
