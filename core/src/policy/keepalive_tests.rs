//! Unit tests of the hybrid histogram keep-alive policy, on a hand-driven clock.

use super::*;

const MIN: Duration = Duration::from_secs(60);
const EXEC: Duration = Duration::from_secs(1);

/// Runs `key` once per `idle` gap (each execution taking [`EXEC`]) and returns the
/// windows after the last execution and when it ended.
fn drive(
    p: &mut HistogramPolicy<u32>,
    t0: Instant,
    key: u32,
    idles: &[Duration],
) -> (KeepAliveWindows, Instant) {
    let mut t = t0;
    p.handle_start(t, &key);
    t += EXEC;
    let mut w = p.handle_end(t, &key);
    for &idle in idles {
        t += idle;
        p.handle_start(t, &key);
        t += EXEC;
        w = p.handle_end(t, &key);
    }
    (w, t)
}

#[test]
fn an_unknown_or_new_app_gets_the_fallback_keep_alive() {
    let mut p = HistogramPolicy::new(HistogramConfig::default());
    let fallback = KeepAliveWindows {
        pre_warm: Duration::ZERO,
        keep_alive: Duration::from_secs(4 * 3600),
        basis: WindowBasis::Fallback,
    };
    assert_eq!(p.windows(&1), fallback);
    let (w, _) = drive(&mut p, Instant::now(), 1, &[MIN * 30; 3]);
    assert_eq!(w, fallback, "3 idle times are fewer than min_samples (5)");
}

#[test]
fn a_periodic_app_is_unloaded_and_pre_warmed_just_before_its_next_call() {
    let mut p = HistogramPolicy::new(HistogramConfig::default());
    let (w, end) = drive(&mut p, Instant::now(), 1, &[MIN * 30 - EXEC; 20]);
    assert_eq!(w.basis, WindowBasis::Histogram);
    // Idle 29 min 59 s: bin 29. Pre-warm at 29 min less 10%, keep until 30 min plus 10%.
    assert_eq!(w.pre_warm, (MIN * 29).mul_f64(0.9));
    assert_eq!(w.pre_warm + w.keep_alive, (MIN * 30).mul_f64(1.1));
    let (from, until) = w.loaded(end);
    let next = end + MIN * 30 - EXEC;
    assert!(from < next && next < until, "the next call finds it loaded");
    assert!(w.pre_warm > MIN * 20, "and it was unloaded most of the gap");
}

#[test]
fn a_frequent_app_is_kept_loaded_from_the_end_of_its_execution() {
    let mut p = HistogramPolicy::new(HistogramConfig::default());
    let (w, _) = drive(&mut p, Instant::now(), 1, &[Duration::from_secs(20); 50]);
    assert_eq!(w.basis, WindowBasis::Histogram);
    assert_eq!(w.pre_warm, Duration::ZERO);
    assert_eq!(w.keep_alive, MIN.mul_f64(1.1));
}

#[test]
fn a_spread_out_histogram_is_not_representative() {
    let mut p = HistogramPolicy::new(HistogramConfig::default());
    // One idle time in each of the 240 bins: a flat histogram, CV 0.
    let idles: Vec<Duration> = (0..240)
        .map(|i| MIN * i + Duration::from_secs(30))
        .collect();
    let (w, _) = drive(&mut p, Instant::now(), 1, &idles);
    assert_eq!(w.basis, WindowBasis::Fallback);
    assert_eq!(w.keep_alive, Duration::from_secs(4 * 3600));
}

#[test]
fn an_app_idle_beyond_the_range_is_forecast() {
    let mut p = HistogramPolicy::new(HistogramConfig::default());
    let six_hours = MIN * 360;
    let (w, end) = drive(&mut p, Instant::now(), 1, &[six_hours; 10]);
    assert_eq!(w.basis, WindowBasis::Forecast);
    assert_eq!(w.pre_warm, six_hours.mul_f64(0.85));
    let (from, until) = w.loaded(end);
    assert!(from < end + six_hours && end + six_hours < until);
}

#[test]
fn apps_are_independent_and_the_table_is_bounded() {
    let mut p = HistogramPolicy::new(HistogramConfig {
        max_tracked: 4,
        ..HistogramConfig::default()
    });
    let t0 = Instant::now();
    let (periodic, _) = drive(&mut p, t0, 1, &[MIN * 30 - EXEC; 20]);
    assert_eq!(periodic.basis, WindowBasis::Histogram);
    assert_eq!(p.windows(&2).basis, WindowBasis::Fallback);
    for k in 10..20 {
        p.handle_start(t0 + MIN * 1000 + Duration::from_secs(k.into()), &k);
    }
    assert_eq!(p.tracked(), 4);
}

#[test]
fn a_backwards_clock_records_a_zero_idle_time() {
    let mut p = HistogramPolicy::new(HistogramConfig::default());
    let t0 = Instant::now() + MIN * 10;
    for i in 0..10u32 {
        p.handle_end(t0, &1);
        p.handle_start(t0 - MIN * i, &1);
    }
    let w = p.handle_end(t0, &1);
    assert_eq!(w.basis, WindowBasis::Histogram);
    assert_eq!(w.pre_warm, Duration::ZERO);
}

#[test]
fn bad_configs_are_refused() {
    for c in [
        HistogramConfig {
            bin_ms: 0,
            ..HistogramConfig::default()
        },
        HistogramConfig {
            head_percentile: 99.5,
            ..HistogramConfig::default()
        },
        HistogramConfig {
            margin: 1.5,
            ..HistogramConfig::default()
        },
        HistogramConfig {
            oob_threshold: f64::NAN,
            ..HistogramConfig::default()
        },
    ] {
        assert!(c.validate().is_err(), "{c:?}");
    }
    assert!(HistogramConfig::default().validate().is_ok());
}
