//! The runtime canary: per-function outcome counts on the current and the next runtime
//! release, and the verdict a statistical test draws from them.
//!
//! The test is a one-sided two-proportion z-test of "the next release fails more often than
//! the current one" on platform-attributable failures (traps, running out of memory or
//! time, link errors; a guest's own non-zero exit is not one). Nothing is decided before
//! both sides have [`CanaryConfig::min_samples`] outcomes. Then the function is
//! [`Verdict::Pinned`] when `z >= z_critical` *and* the next release failed at least
//! [`CanaryConfig::min_failures`] times (so a single failure never pins, however few the
//! current release's), and [`Verdict::Promoted`] otherwise. Verdicts are final: later
//! outcomes do not change them. No timing is involved, so there is no clock to inject.
//!
//! Sans-IO: never reads a clock, draws randomness or performs I/O; the node passes the
//! request's draw in and persists the verdicts this returns.

use std::collections::HashMap;
use std::hash::Hash;

/// One-sided z for a significance level of 1%.
pub const Z_ONE_PERCENT: f64 = 2.326;

/// The canary draw of an invocation, the same at every tier: requests with an affinity key
/// draw from the key (its [`super::affinity::score`] for the runtime release, the same on
/// every node and release, and independent of the key's alias draw), so they all reach
/// the same release and so the same warm instance; others draw from the high half of the
/// random request id (the low half is the alias draw, [`super::alias::draw`]: the two must
/// not correlate). A POP and the region it forwards to therefore place one request alike.
pub fn draw(request_id: u128, affinity: Option<&str>) -> u64 {
    match affinity {
        Some(key) => super::affinity::score(key.as_bytes(), b"runtime-release"),
        // Truncation intended: the high 64 bits of a random id.
        None => (request_id >> 64) as u64,
    }
}

/// The side an undecided, tracked function's invocation with `draw` runs on when
/// `percent` of invocations go to the next release.
pub fn sample(percent: u8, draw: u64) -> Side {
    if draw % 100 < u64::from(percent) {
        Side::Next
    } else {
        Side::Current
    }
}

/// Which runtime release an invocation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The release in production.
    Current,
    /// The release being canaried.
    Next,
}

/// A function's canary verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Still sampling: a share of invocations runs on the next release.
    #[default]
    Undecided,
    /// Worse on the next release: every invocation runs on the current one.
    Pinned,
    /// No worse on the next release: every invocation runs on it.
    Promoted,
}

/// Outcome counts of one function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Outcomes on the current release.
    pub current: u32,
    /// Of which platform failures.
    pub current_failures: u32,
    /// Outcomes on the next release.
    pub next: u32,
    /// Of which platform failures.
    pub next_failures: u32,
}

impl Counts {
    /// Adds `n` outcomes on the current side, `failures` of them failed (at most `n`).
    pub fn add_current(&mut self, n: u32, failures: u32) {
        self.current = self.current.saturating_add(n);
        self.current_failures = self.current_failures.saturating_add(failures.min(n));
    }

    /// Adds `n` outcomes on the next side, `failures` of them failed (at most `n`).
    pub fn add_next(&mut self, n: u32, failures: u32) {
        self.next = self.next.saturating_add(n);
        self.next_failures = self.next_failures.saturating_add(failures.min(n));
    }

    /// The z statistic of "next fails more often than current" (positive when it does),
    /// `0.0` when either side is empty or the pooled rate is 0 or 1 (no variance: the
    /// two sides are equal).
    pub fn z(&self) -> f64 {
        if self.current == 0 || self.next == 0 {
            return 0.0;
        }
        let (n0, n1) = (f64::from(self.current), f64::from(self.next));
        let (f0, f1) = (
            f64::from(self.current_failures),
            f64::from(self.next_failures),
        );
        let pooled = (f0 + f1) / (n0 + n1);
        let variance = pooled * (1.0 - pooled) * (1.0 / n0 + 1.0 / n1);
        if variance <= 0.0 {
            return 0.0;
        }
        (f1 / n1 - f0 / n0) / variance.sqrt()
    }
}

/// The canary's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryConfig {
    /// Share of an undecided function's invocations run on the next release, 0..=100.
    pub percent: u8,
    /// Outcomes needed on *each* side before any verdict.
    pub min_samples: u32,
    /// Failures on the next release needed to pin.
    pub min_failures: u32,
    /// The z above which the next release is worse (default [`Z_ONE_PERCENT`]).
    pub z_critical: f64,
    /// Most undecided functions tracked; a function beyond it runs on the current release
    /// until a tracked one is decided.
    pub max_tracked: usize,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            percent: 10,
            min_samples: 30,
            min_failures: 3,
            z_critical: Z_ONE_PERCENT,
            max_tracked: 4096,
        }
    }
}

/// Counts and verdicts of every function in a rollout, by key `K`.
#[derive(Debug)]
pub struct Canary<K> {
    cfg: CanaryConfig,
    counts: HashMap<K, Counts>,
    verdicts: HashMap<K, Verdict>,
}

impl<K: Hash + Eq + Clone> Canary<K> {
    /// A rollout with nothing counted.
    pub fn new(cfg: CanaryConfig) -> Self {
        Self {
            cfg,
            counts: HashMap::new(),
            verdicts: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CanaryConfig {
        &self.cfg
    }

    /// Restores a verdict decided earlier (read back from durable storage).
    pub fn restore(&mut self, key: K, verdict: Verdict) {
        if verdict != Verdict::Undecided {
            self.counts.remove(&key);
            self.verdicts.insert(key, verdict);
        }
    }

    /// The function's verdict.
    pub fn verdict(&self, key: &K) -> Verdict {
        self.verdicts.get(key).copied().unwrap_or_default()
    }

    /// The function's counts while undecided.
    pub fn counts(&self, key: &K) -> Option<Counts> {
        self.counts.get(key).copied()
    }

    /// Every function with a verdict or counts.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.verdicts.keys().chain(self.counts.keys())
    }

    /// The release an invocation of `key` runs on; `draw` is uniform over `u64` (the
    /// node derives it from the request id, so a request is placed deterministically).
    pub fn choose(&self, key: &K, draw: u64) -> Side {
        match self.verdict(key) {
            Verdict::Pinned => Side::Current,
            Verdict::Promoted => Side::Next,
            Verdict::Undecided => {
                let tracked =
                    self.counts.contains_key(key) || self.counts.len() < self.cfg.max_tracked;
                if tracked {
                    sample(self.cfg.percent, draw)
                } else {
                    Side::Current
                }
            }
        }
    }

    /// Counts one outcome of `key` on `side`; returns the verdict when this outcome
    /// decided it (once per function).
    pub fn handle_outcome(&mut self, key: &K, side: Side, failed: bool) -> Option<Verdict> {
        self.handle_outcomes(key, side, 1, u32::from(failed))
    }

    /// Counts `n` outcomes of `key` on `side`, `failures` of them platform failures (a
    /// batch a POP reported); returns the verdict when they decided it (once per function).
    /// The batch is judged as a whole, after it is counted.
    pub fn handle_outcomes(
        &mut self,
        key: &K,
        side: Side,
        n: u32,
        failures: u32,
    ) -> Option<Verdict> {
        if n == 0 || self.verdicts.contains_key(key) {
            return None;
        }
        if !self.counts.contains_key(key) && self.counts.len() >= self.cfg.max_tracked {
            return None;
        }
        let c = self.counts.entry(key.clone()).or_default();
        match side {
            Side::Current => c.add_current(n, failures),
            Side::Next => c.add_next(n, failures),
        }
        let verdict = judge(&self.cfg, c);
        if verdict == Verdict::Undecided {
            return None;
        }
        self.counts.remove(key);
        self.verdicts.insert(key.clone(), verdict);
        Some(verdict)
    }
}

/// The verdict `counts` support under `cfg` (see the module docs).
pub fn judge(cfg: &CanaryConfig, counts: &Counts) -> Verdict {
    if counts.current < cfg.min_samples || counts.next < cfg.min_samples {
        return Verdict::Undecided;
    }
    if counts.next_failures >= cfg.min_failures && counts.z() >= cfg.z_critical {
        Verdict::Pinned
    } else {
        Verdict::Promoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CanaryConfig {
        CanaryConfig {
            percent: 50,
            min_samples: 10,
            min_failures: 3,
            z_critical: Z_ONE_PERCENT,
            max_tracked: 2,
        }
    }

    fn feed(c: &mut Canary<&'static str>, k: &'static str, side: Side, n: u32, fail: bool) {
        for _ in 0..n {
            c.handle_outcome(&k, side, fail);
        }
    }

    #[test]
    fn no_samples_is_undecided_and_draws_split_by_percent() {
        let c: Canary<&str> = Canary::new(cfg());
        assert_eq!(c.verdict(&"f"), Verdict::Undecided);
        assert_eq!(judge(&cfg(), &Counts::default()), Verdict::Undecided);
        assert_eq!(Counts::default().z(), 0.0);
        assert_eq!(c.choose(&"f", 49), Side::Next);
        assert_eq!(c.choose(&"f", 50), Side::Current);
        assert_eq!(c.choose(&"f", 149), Side::Next);
    }

    #[test]
    fn always_failing_on_next_is_pinned_once_both_sides_have_enough() {
        let mut c = Canary::new(cfg());
        feed(&mut c, "f", Side::Next, 10, true);
        assert_eq!(
            c.verdict(&"f"),
            Verdict::Undecided,
            "current has no samples yet"
        );
        feed(&mut c, "f", Side::Current, 9, false);
        assert_eq!(
            c.handle_outcome(&"f", Side::Current, false),
            Some(Verdict::Pinned)
        );
        assert_eq!(c.choose(&"f", 0), Side::Current);
        // Final: later outcomes change nothing.
        feed(&mut c, "f", Side::Next, 50, false);
        assert_eq!(c.verdict(&"f"), Verdict::Pinned);
    }

    #[test]
    fn a_single_failure_never_pins() {
        let mut c = Canary::new(cfg());
        feed(&mut c, "f", Side::Current, 10, false);
        c.handle_outcome(&"f", Side::Next, true);
        feed(&mut c, "f", Side::Next, 8, false);
        assert_eq!(
            c.handle_outcome(&"f", Side::Next, false),
            Some(Verdict::Promoted)
        );
        assert_eq!(c.choose(&"f", 99), Side::Next);
    }

    #[test]
    fn ties_promote_including_all_failing_on_both() {
        for fail in [false, true] {
            let mut c = Canary::new(cfg());
            feed(&mut c, "f", Side::Current, 10, fail);
            feed(&mut c, "f", Side::Next, 10, fail);
            assert_eq!(c.verdict(&"f"), Verdict::Promoted, "fail={fail}");
        }
    }

    #[test]
    fn alternating_outcomes_on_both_sides_promote() {
        let mut c = Canary::new(cfg());
        for i in 0..20 {
            c.handle_outcome(&"f", Side::Current, i % 2 == 0);
            c.handle_outcome(&"f", Side::Next, i % 2 == 1);
        }
        assert_eq!(c.verdict(&"f"), Verdict::Promoted);
    }

    #[test]
    fn a_small_excess_of_failures_is_not_significant() {
        let counts = Counts {
            current: 10,
            current_failures: 2,
            next: 10,
            next_failures: 4,
        };
        assert!(counts.z() < Z_ONE_PERCENT);
        assert_eq!(judge(&cfg(), &counts), Verdict::Promoted);
        let worse = Counts {
            next_failures: 9,
            ..counts
        };
        assert_eq!(judge(&cfg(), &worse), Verdict::Pinned);
    }

    #[test]
    fn better_on_next_promotes() {
        let counts = Counts {
            current: 10,
            current_failures: 10,
            next: 10,
            next_failures: 0,
        };
        assert!(counts.z() < 0.0);
        assert_eq!(judge(&cfg(), &counts), Verdict::Promoted);
    }

    #[test]
    fn a_batch_counts_like_its_outcomes_one_by_one() {
        let mut batched = Canary::new(cfg());
        assert_eq!(batched.handle_outcomes(&"f", Side::Current, 0, 0), None);
        assert_eq!(batched.handle_outcomes(&"f", Side::Current, 10, 0), None);
        // Failures beyond the batch are clamped to it.
        assert_eq!(
            batched.handle_outcomes(&"f", Side::Next, 10, 99),
            Some(Verdict::Pinned)
        );
        let mut single = Canary::new(cfg());
        feed(&mut single, "f", Side::Current, 10, false);
        feed(&mut single, "f", Side::Next, 10, true);
        assert_eq!(single.verdict(&"f"), batched.verdict(&"f"));
    }

    #[test]
    fn the_draw_is_the_same_at_every_tier_and_splits_by_percent() {
        let id: u128 = (0x63 << 64) | 0x7;
        assert_eq!(draw(id, None), 0x63);
        assert_eq!(draw(1, Some("k")), draw(2, Some("k")));
        assert_eq!(sample(10, 9), Side::Next);
        assert_eq!(sample(10, 10), Side::Current);
        assert_eq!(sample(0, 0), Side::Current);
        let next = (0..1000u64)
            .filter(|&d| sample(10, d) == Side::Next)
            .count();
        assert_eq!(next, 100);
    }

    #[test]
    fn tracking_is_bounded_and_restored_verdicts_stick() {
        let mut c = Canary::new(cfg());
        c.handle_outcome(&"a", Side::Current, false);
        c.handle_outcome(&"b", Side::Current, false);
        assert_eq!(c.handle_outcome(&"c", Side::Current, false), None);
        assert!(c.counts(&"c").is_none());
        assert_eq!(
            c.choose(&"c", 0),
            Side::Current,
            "untracked runs on current"
        );
        c.restore("c", Verdict::Promoted);
        assert_eq!(c.choose(&"c", 99), Side::Next);
        c.restore("a", Verdict::Pinned);
        assert!(c.counts(&"a").is_none());
        assert_eq!(c.verdict(&"a"), Verdict::Pinned);
    }
}
