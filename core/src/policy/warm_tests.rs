//! Unit tests of the warm-pool policy, on a hand-driven clock.

use super::*;

const MB: u64 = 1 << 20;
const TICK: Duration = Duration::from_secs(1);

fn policy(config: WarmConfig) -> WarmPolicy<u32> {
    WarmPolicy::new(config)
}

/// Feeds `n` arrivals of `key` (each taking `dur`) into the tick starting at `at`, then
/// closes that tick.
fn tick_with(p: &mut WarmPolicy<u32>, at: Instant, key: u32, n: u32, dur: Duration) {
    for i in 0..n {
        p.handle_invocation(
            at + TICK.mul_f64(f64::from(i) / f64::from(n.max(1))),
            &key,
            dur,
            64 * MB,
        );
    }
    p.tick(at + TICK);
}

#[test]
fn a_steady_rate_needs_littles_law_plus_headroom() {
    let mut p = policy(WarmConfig::default());
    let t0 = Instant::now();
    // 20/s of 100 ms each: 2 in flight on average, + 1 headroom.
    for i in 0..30 {
        tick_with(&mut p, t0 + TICK * i, 7, 20, Duration::from_millis(100));
    }
    assert_eq!(p.target(&7), 3);
    assert!(p.trend(&7).abs() < 0.5);
}

#[test]
fn a_ramp_is_forecast_ahead_of_the_current_rate() {
    let mut p = policy(WarmConfig::default());
    let t0 = Instant::now();
    // The rate doubles every 3 ticks: 5, 10, 20, 40 per second.
    let mut rate = 5;
    for i in 0..12 {
        if i > 0 && i % 3 == 0 {
            rate *= 2;
        }
        tick_with(&mut p, t0 + TICK * i, 1, rate, Duration::from_millis(50));
    }
    assert!(p.trend(&1) > 0.0);
    let forecast = p.forecast(&1);
    assert!(
        forecast > 40.0,
        "forecast {forecast} is not ahead of the last rate (40/s)"
    );
    // ceil(forecast * 0.05) + 1, at least 3.
    assert!(p.target(&1) >= 3, "{}", p.target(&1));
}

#[test]
fn a_burst_is_capped_by_the_max_pool() {
    let mut p = policy(WarmConfig {
        max_pool: 4,
        ..WarmConfig::default()
    });
    let t0 = Instant::now();
    tick_with(&mut p, t0, 1, 1000, Duration::from_millis(500));
    assert_eq!(p.target(&1), 4);
}

#[test]
fn the_memory_budget_goes_to_the_highest_forecasts_first() {
    // 256 MiB at 64 MiB each: four instances across all functions.
    let mut p = policy(WarmConfig {
        memory_budget_mb: 256,
        ..WarmConfig::default()
    });
    let t0 = Instant::now();
    for i in 0..5 {
        let at = t0 + TICK * i;
        for (key, n) in [(1, 40), (2, 10), (3, 10)] {
            for j in 0..n {
                p.handle_invocation(
                    at + TICK.mul_f64(f64::from(j) / f64::from(n)),
                    &key,
                    Duration::from_millis(50),
                    64 * MB,
                );
            }
        }
        p.tick(at + TICK);
    }
    // Key 1 wants ceil(40*0.05)+1 = 3; keys 2 and 3 tie at 2 each: only 1 is left, for the
    // lower key.
    assert_eq!((p.target(&1), p.target(&2), p.target(&3)), (3, 1, 0));
    let total: u32 = p.targets().map(|(_, t)| t).sum();
    assert!(u64::from(total) * 64 * MB <= 256 * MB);
}

#[test]
fn traffic_that_stops_decays_to_zero_and_leaves_the_table_after_keep_alive() {
    let mut p = policy(WarmConfig {
        keep_alive_ms: 10_000,
        ..WarmConfig::default()
    });
    let t0 = Instant::now();
    for i in 0..10 {
        tick_with(&mut p, t0 + TICK * i, 1, 20, Duration::from_millis(100));
    }
    assert!(p.target(&1) >= 2);
    // Quiet ticks: the forecast falls, the headroom instance stays until keep-alive.
    p.tick(t0 + TICK * 15);
    assert!(p.target(&1) <= 2, "{}", p.target(&1));
    p.tick(t0 + TICK * 40);
    assert_eq!(p.target(&1), 0);
    assert_eq!(p.targets().count(), 0);
}

#[test]
fn a_clock_that_jumps_backwards_closes_no_tick() {
    let mut p = policy(WarmConfig::default());
    let t0 = Instant::now() + Duration::from_secs(100);
    tick_with(&mut p, t0, 1, 10, Duration::from_millis(100));
    let before = (p.forecast(&1), p.target(&1));
    assert!(!p.tick(t0 - Duration::from_secs(50)));
    p.handle_invocation(
        t0 - Duration::from_secs(50),
        &1,
        Duration::from_millis(100),
        64 * MB,
    );
    assert_eq!((p.forecast(&1), p.target(&1)), before);
}

#[test]
fn a_long_gap_is_caught_up_in_bounded_work() {
    let mut p = policy(WarmConfig::default());
    let t0 = Instant::now();
    for i in 0..5 {
        tick_with(&mut p, t0 + TICK * i, 1, 50, Duration::from_millis(100));
    }
    // A year later: one call, bounded catch-up, the function is gone.
    assert!(p.tick(t0 + Duration::from_secs(365 * 24 * 3600)));
    assert_eq!(p.target(&1), 0);
}

#[test]
fn the_tracked_table_is_bounded() {
    let mut p = policy(WarmConfig {
        max_tracked: 16,
        ..WarmConfig::default()
    });
    let t0 = Instant::now();
    for k in 0..1000u32 {
        p.handle_invocation(
            t0 + Duration::from_millis(u64::from(k)),
            &k,
            Duration::ZERO,
            MB,
        );
    }
    assert_eq!(p.targets().count(), 16);
}

#[test]
fn out_of_range_smoothing_is_refused() {
    let bad = WarmConfig {
        alpha: 0.0,
        ..WarmConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = WarmConfig {
        beta: 1.5,
        ..WarmConfig::default()
    };
    assert!(bad.validate().is_err());
    assert!(WarmConfig::default().validate().is_ok());
}

#[test]
fn arrivals_handed_over_in_a_batch_plan_as_if_handled_one_by_one() {
    let t0 = Instant::now();
    let durations = [5u64, 80, 20, 300, 40, 40, 7];
    let mut one_by_one = policy(WarmConfig::default());
    let mut batched = policy(WarmConfig::default());
    for round in 0..5u32 {
        let at = t0 + TICK * round;
        let mut batch: Option<Arrivals> = None;
        for (i, ms) in durations.iter().enumerate() {
            let now = at + Duration::from_millis(100 * i as u64);
            let d = Duration::from_millis(*ms * u64::from(round + 1));
            one_by_one.handle_invocation(now, &7, d, 64 * MB);
            match &mut batch {
                Some(b) => b.push(now, d),
                None => batch = Some(Arrivals::new(now, d)),
            }
        }
        let batch = batch.expect("seven arrivals");
        assert_eq!(batch.count(), durations.len() as u64);
        batched.handle_arrivals(&7, &batch, 64 * MB);
        assert!(one_by_one.tick(at + TICK));
        assert!(batched.tick(at + TICK));
        assert_eq!(batched.target(&7), one_by_one.target(&7), "round {round}");
        let (a, b) = (batched.forecast(&7), one_by_one.forecast(&7));
        assert!((a - b).abs() < 1e-9, "round {round}: {a} against {b}");
        let (a, b) = (batched.series.get(&7), one_by_one.series.get(&7));
        let means = a.zip(b).map(|(a, b)| (a.mean_duration, b.mean_duration));
        assert!(
            means.is_some_and(|(a, b)| (a - b).abs() < 1e-12),
            "round {round}: mean durations {means:?}"
        );
    }
}
