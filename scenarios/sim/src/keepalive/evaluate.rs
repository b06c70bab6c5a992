//! Replays a [`Workload`] against each keep-alive policy, one instance per application
//! (the paper's model): an invocation is cold when its application is not loaded when it
//! arrives; memory is wasted while an application is loaded and not executing.
//!
//! - `fixed-10min`: loaded from the end of each execution for `fixed_keep_alive_min`.
//! - `hybrid-histogram`: `common::policy::HistogramPolicy`'s windows after each execution
//!   (unloaded until the pre-warm, then loaded for the keep-alive).
//! - `trend`: the POP's warm pools: `common::policy::WarmPolicy` in trend mode, ticked on
//!   its own tick over the whole workload, keeps an application loaded through every tick
//!   whose target is at least one instance; besides, an instance stays loaded for the POP's
//!   idle keep-alive (`pop.keep_alive_s`) after each execution. The memory budget is lifted
//!   (as the paper's simulation has no capacity limit) and instances beyond the first are
//!   not counted.

use super::{AppActivity, KeepAliveRow, KeepAliveSpec, Workload};
use std::time::{Duration, Instant};
use strata_core::policy::{
    HistogramPolicy, KeepAliveWindows, WarmConfig, WarmMode, WarmPolicy, WindowBasis,
};

/// What the trend policy is: the POP's warm-pool config and idle keep-alive.
#[derive(Debug, Clone)]
pub struct TrendModel {
    /// The POP's `[pop.warm]` section.
    pub warm: WarmConfig,
    /// The POP's idle keep-alive, seconds.
    pub idle_keep_alive_s: f64,
}

/// The policies' names, in report order.
pub const POLICIES: [&str; 3] = ["fixed-10min", "hybrid-histogram", "trend"];

/// One policy's tally.
#[derive(Debug, Default)]
struct Tally {
    cold_pct: Vec<f64>,
    invocations: u64,
    cold: u64,
    wasted_gb_s: f64,
}

impl Tally {
    fn add(&mut self, app: &AppActivity, cold: u64, wasted_s: f64) {
        let n = app.invocations();
        self.invocations += n;
        self.cold += cold;
        self.cold_pct.push(100.0 * cold as f64 / n.max(1) as f64);
        self.wasted_gb_s += wasted_s * app.memory_mb / 1024.0;
    }

    fn row(mut self, policy: &str) -> KeepAliveRow {
        self.cold_pct.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            if self.cold_pct.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = (q * self.cold_pct.len() as f64).ceil().max(1.0) as usize;
            self.cold_pct[rank.min(self.cold_pct.len()) - 1]
        };
        KeepAliveRow {
            policy: policy.to_owned(),
            cold_start_pct_p50: pct(0.50),
            cold_start_pct_p75: pct(0.75),
            wasted_memory_gb_s: self.wasted_gb_s,
            invocations: self.invocations,
            cold_starts: self.cold,
            apps: self.cold_pct.len(),
            per_app_cold_pct: self.cold_pct,
        }
    }
}

/// Every policy on `w`, in [`POLICIES`] order.
pub fn all(w: &Workload, spec: &KeepAliveSpec, trend: &TrendModel) -> Vec<KeepAliveRow> {
    let t0 = Instant::now();
    let fixed = fixed_windows(Duration::from_secs_f64(spec.fixed_keep_alive_min * 60.0));
    let mut fixed_tally = Tally::default();
    let mut hybrid_tally = Tally::default();
    let mut hybrid = HistogramPolicy::new(spec.hybrid.clone());
    for (i, app) in w.apps.iter().enumerate() {
        let (cold, wasted) = windowed(app, w.span_s, |_, _| {}, |_| fixed, |_| {});
        fixed_tally.add(app, cold, wasted);
        let key = i as u32;
        let at = |s: f64| t0 + Duration::from_secs_f64(s.max(0.0));
        let policy = std::cell::RefCell::new(&mut hybrid);
        let (cold, wasted) = windowed(
            app,
            w.span_s,
            |start, _| policy.borrow_mut().handle_start(at(start), &key),
            |end| policy.borrow_mut().handle_end(at(end), &key),
            |_| {},
        );
        hybrid_tally.add(app, cold, wasted);
    }
    vec![
        fixed_tally.row(POLICIES[0]),
        hybrid_tally.row(POLICIES[1]),
        trend_tally(w, trend, t0).row(POLICIES[2]),
    ]
}

/// The fixed policy's windows: loaded for `keep_alive` from the end of each execution.
fn fixed_windows(keep_alive: Duration) -> KeepAliveWindows {
    KeepAliveWindows {
        pre_warm: Duration::ZERO,
        keep_alive,
        basis: WindowBasis::Fallback,
    }
}

/// Which of `app`'s blocks start cold under a fixed keep-alive of `keep_alive` after
/// each execution (the `fixed-10min` policy's rule): what a live replay of that policy
/// is checked against.
pub fn fixed_cold_blocks(app: &AppActivity, keep_alive: Duration) -> Vec<bool> {
    let fixed = fixed_windows(keep_alive);
    let mut verdicts = Vec::with_capacity(app.blocks.len());
    let end = app.blocks.last().map_or(0.0, |b| b.end);
    windowed(app, end, |_, _| {}, |_| fixed, |cold| verdicts.push(cold));
    verdicts
}

/// Replays one app under a policy that hands out windows after each execution: `start`
/// is told each block's start, `end` each block's end and returns the windows until the
/// next, `verdict` whether each block started cold. Returns the cold starts and the
/// wasted (loaded, idle) seconds.
fn windowed(
    app: &AppActivity,
    span_s: f64,
    mut start: impl FnMut(f64, u64),
    mut end: impl FnMut(f64) -> KeepAliveWindows,
    mut verdict: impl FnMut(bool),
) -> (u64, f64) {
    let (mut cold, mut wasted) = (0u64, 0.0f64);
    let mut after: Option<(f64, KeepAliveWindows)> = None;
    for b in &app.blocks {
        let is_cold = match after {
            None => true,
            Some((idle_from, w)) => {
                let (from, until) = window(idle_from, &w);
                wasted += overlap(from, until, idle_from, b.start);
                !(from <= b.start && b.start <= until)
            }
        };
        cold += u64::from(is_cold);
        verdict(is_cold);
        start(b.start, b.invocations);
        after = Some((b.end, end(b.end)));
    }
    if let Some((idle_from, w)) = after {
        let (from, until) = window(idle_from, &w);
        wasted += overlap(from, until, idle_from, span_s.max(idle_from));
    }
    (cold, wasted)
}

fn window(idle_from: f64, w: &KeepAliveWindows) -> (f64, f64) {
    let from = idle_from + w.pre_warm.as_secs_f64();
    (from, from + w.keep_alive.as_secs_f64())
}

fn overlap(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    (a1.min(b1) - a0.max(b0)).max(0.0)
}

/// One app's loaded time under the trend policy: a union of intervals that arrive in
/// order of their start.
#[derive(Debug, Default, Clone, Copy)]
struct Loaded {
    current: Option<(f64, f64)>,
    total: f64,
    busy: f64,
    cold: u64,
}

impl Loaded {
    fn covers(&self, t: f64) -> bool {
        self.current
            .is_some_and(|(from, until)| from <= t && t <= until)
    }

    fn extend(&mut self, from: f64, until: f64) {
        self.current = match self.current {
            Some((f, u)) if from <= u => Some((f, u.max(until))),
            Some((f, u)) => {
                self.total += u - f;
                Some((from, until))
            }
            None => Some((from, until)),
        };
    }

    fn close(&mut self, span_s: f64) {
        if let Some((f, u)) = self.current.take() {
            self.total += u.min(span_s).max(f) - f;
        }
    }
}

/// Most `handle_invocation` calls per block: the target only needs to see the block's
/// traffic, and a minute of a million invocations would otherwise cost a million calls.
const MAX_CALLS_PER_BLOCK: u64 = 64;

fn trend_tally(w: &Workload, trend: &TrendModel, t0: Instant) -> Tally {
    let config = WarmConfig {
        mode: WarmMode::Trend,
        memory_budget_mb: u64::MAX >> 20,
        max_tracked: w.apps.len().max(1),
        ..trend.warm.clone()
    };
    let tick_s = config.tick().as_secs_f64();
    let mut policy: WarmPolicy<u32> = WarmPolicy::new(config);
    let mut events: Vec<(f64, u32, u32)> = w
        .apps
        .iter()
        .enumerate()
        .flat_map(|(a, app)| {
            app.blocks
                .iter()
                .enumerate()
                .map(move |(b, block)| (block.start, a as u32, b as u32))
        })
        .collect();
    events.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let mut loaded = vec![Loaded::default(); w.apps.len()];
    let at = |s: f64| t0 + Duration::from_secs_f64(s.max(0.0));
    let secs = |i: Instant| i.saturating_duration_since(t0).as_secs_f64();
    let run_ticks = |policy: &mut WarmPolicy<u32>, loaded: &mut [Loaded], until: f64| {
        while let Some(next) = policy.poll_timeout() {
            let t = secs(next);
            if t > until {
                break;
            }
            policy.tick(next);
            for (&app, target) in policy.targets() {
                if target > 0 {
                    loaded[app as usize].extend(t, t + tick_s);
                }
            }
        }
    };
    for (start, a, b) in events {
        run_ticks(&mut policy, &mut loaded, start);
        let app = &w.apps[a as usize];
        let block = app.blocks[b as usize];
        let l = &mut loaded[a as usize];
        if !l.covers(start) {
            l.cold += 1;
        }
        l.busy += block.end - block.start;
        l.extend(start, block.end + trend.idle_keep_alive_s);
        let calls = block.invocations.min(MAX_CALLS_PER_BLOCK);
        let each = Duration::from_secs_f64((block.end - block.start) / block.invocations as f64);
        let memory = (app.memory_mb * f64::from(1u32 << 20)) as u64;
        for _ in 0..calls {
            policy.handle_invocation(at(start), &a, each, memory);
        }
    }
    run_ticks(&mut policy, &mut loaded, w.span_s);
    let mut tally = Tally::default();
    for (app, l) in w.apps.iter().zip(&mut loaded) {
        l.close(w.span_s);
        tally.add(app, l.cold, (l.total - l.busy).max(0.0));
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalive::{Block, Source, generate::GenerateSpec};

    fn spec() -> KeepAliveSpec {
        KeepAliveSpec {
            source: Source::Generate(GenerateSpec::default()),
            fixed_keep_alive_min: 10.0,
            hybrid: Default::default(),
            live: Default::default(),
        }
    }

    fn trend() -> TrendModel {
        TrendModel {
            warm: WarmConfig::default(),
            idle_keep_alive_s: 60.0,
        }
    }

    /// One app invoked every `gap_min` minutes for a day, each run taking a second.
    fn periodic(gap_min: f64) -> Workload {
        let blocks = (0..)
            .map(|i| f64::from(i) * gap_min * 60.0)
            .take_while(|&t| t < 86_400.0)
            .map(|start| Block {
                start,
                end: start + 1.0,
                invocations: 1,
            })
            .collect();
        Workload {
            apps: vec![AppActivity {
                memory_mb: 1024.0,
                blocks,
            }],
            function_daily_invocations: vec![],
            span_s: 86_400.0,
        }
    }

    #[test]
    fn every_thirty_minutes_is_always_cold_under_fixed_but_learned_by_the_histogram() {
        let rows = all(&periodic(30.0), &spec(), &trend());
        let [fixed, hybrid, trend] = &rows[..] else {
            panic!("three rows");
        };
        assert_eq!(fixed.cold_starts, 48, "every call is cold");
        // Ten minutes of 1 GB after each of 48 calls.
        assert!((fixed.wasted_memory_gb_s - 48.0 * 600.0).abs() < 1.0);
        // The fallback (4 h keep-alive) keeps it warm from the second call on, then the
        // histogram takes over with a pre-warm: only the first call is cold.
        assert_eq!(hybrid.cold_starts, 1);
        assert!(hybrid.wasted_memory_gb_s < fixed.wasted_memory_gb_s);
        assert_eq!(trend.cold_starts, 48, "a one-minute idle keep-alive");
    }

    #[test]
    fn every_minute_is_warm_under_every_policy() {
        let rows = all(&periodic(1.0), &spec(), &trend());
        for r in &rows {
            assert_eq!(r.cold_starts, 1, "{}", r.policy);
            assert_eq!(r.invocations, 1440);
        }
    }
}
