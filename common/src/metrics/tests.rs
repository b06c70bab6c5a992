use super::*;
use crate::model::{FunctionName, TenantId, WindowCounts};

fn key(tenant: &str, name: &str) -> FunctionKey {
    FunctionKey {
        tenant: TenantId::new(tenant).expect("test input is valid"),
        name: FunctionName::new(name).expect("test input is valid"),
    }
}

fn stats(t0: Instant) -> Arc<NodeStats> {
    NodeStats::new(NodeId("pop-1".into()), Tier::Pop, t0)
}

#[test]
fn snapshot_reports_rates_over_the_window_and_totals_since_start() {
    let t0 = Instant::now();
    let s = stats(t0);
    let f = key("acme", "hello");
    for i in 0..10 {
        let start = if i == 0 {
            StartKind::Cold
        } else {
            StartKind::Warm
        };
        s.executed(&f, start, Outcome::Ok, Duration::from_micros(100));
        s.request(true, Duration::from_micros(200 + i));
    }
    s.forwarded(&f.to_string(), "rare");
    s.request(false, Duration::from_millis(2));
    let load = s.snapshot(t0 + Duration::from_secs(2), 1_000);
    assert_eq!(load.window_ms, 2000);
    assert_eq!(load.totals.executed, 10);
    assert_eq!(load.totals.cold_starts, 1);
    assert_eq!(load.totals.forwarded, 1);
    assert_eq!(load.window.local, 10);
    assert_eq!(load.window.forwarded, 1);
    assert_eq!(load.window.cold_starts, 1);
    let p50 = load.window.latency_p50_us;
    assert!((200..=212).contains(&p50), "{p50}");
    assert_eq!(load.forwards_by_reason, vec![("rare".to_owned(), 1)]);
    assert_eq!(load.functions.len(), 1);
    assert_eq!(load.functions[0].function, "acme/hello");
    assert_eq!(load.functions[0].in_window, 11);

    // The next window starts empty; totals stay.
    let next = s.snapshot(t0 + Duration::from_secs(3), 2_000);
    assert_eq!(next.window, WindowCounts::default());
    assert_eq!(next.totals.executed, 10);
    assert_eq!(next.functions[0].in_window, 0);
}

#[test]
fn in_flight_is_counted_per_tenant_until_the_guard_drops() {
    let t0 = Instant::now();
    let s = stats(t0);
    let acme = TenantId::new("acme").expect("test input is valid");
    let a = s.in_flight(&acme, Some(10));
    let b = s.in_flight(&acme, Some(10));
    let load = s.snapshot(t0 + Duration::from_secs(1), 0);
    assert_eq!(load.in_flight, 2);
    assert_eq!(load.tenants[0].in_flight, 2);
    assert_eq!(load.tenants[0].limit, Some(10));
    drop(a);
    drop(b);
    let load = s.snapshot(t0 + Duration::from_secs(2), 0);
    assert_eq!(load.in_flight, 0);
    // The peak of the window that just closed is still shown once.
    assert_eq!(load.tenants[0].peak_in_flight, 2);
}

#[test]
fn distinct_function_names_beyond_the_bound_are_aggregated() {
    let t0 = Instant::now();
    let s = stats(t0);
    for i in 0..(load::MAX_FUNCTIONS + 100) {
        s.executed(
            &key("acme", &format!("f{i}")),
            StartKind::Cold,
            Outcome::Ok,
            Duration::ZERO,
        );
    }
    let load = s.snapshot(t0 + Duration::from_secs(1), 0);
    assert_eq!(load.totals.executed as usize, load::MAX_FUNCTIONS + 100);
    assert_eq!(load.functions.len(), load::REPORTED_FUNCTIONS);
    // The overflow bucket got the extra 100 (plus one: it took the last free slot's place
    // only after the map was full).
    assert_eq!(load.functions[0].function, load::OTHER);
}

#[test]
fn prometheus_text_uses_conventional_names() {
    let t0 = Instant::now();
    let s = stats(t0);
    s.executed(
        &key("acme", "hello"),
        StartKind::Warm,
        Outcome::Timeout,
        Duration::from_millis(3),
    );
    s.forwarded("acme/rare", "rare");
    s.request(false, Duration::from_millis(1));
    s.artifact_lookup(true);
    s.quic_rtt("region-1", Duration::from_micros(250));
    s.set_levels(Levels {
        warm_instances: 3,
        ..Levels::default()
    });
    let text = s.encode();
    for needle in [
        r#"strata_invocations_total{tier="pop",function="acme/hello",outcome="timeout",start="warm"} 1"#,
        r#"strata_forwards_total{reason="rare"} 1"#,
        "strata_request_duration_seconds_bucket",
        "strata_execution_duration_seconds_count",
        r#"strata_artifact_cache_lookups_total{result="hit"} 1"#,
        r#"strata_quic_rtt_seconds{region="region-1"} 0.00025"#,
        "strata_warm_instances 3",
        "strata_dlq_depth 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[test]
fn label_values_naming_tenants_and_functions_are_bounded() {
    let s = stats(Instant::now());
    for i in 0..(MAX_LABEL_VALUES + 50) {
        let f = key(&format!("t{i}"), "f");
        s.executed(&f, StartKind::Warm, Outcome::Ok, Duration::from_micros(1));
        drop(s.in_flight(&f.tenant, Some(4)));
    }
    let text = s.encode();
    let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    // One series per admitted name plus the shared `_other` one, however many names came.
    assert!(series("strata_invocations_total{") <= MAX_LABEL_VALUES + 1);
    assert!(text.contains(r#"function="_other""#), "{text}");
    assert!(series("strata_concurrency_in_use{") <= MAX_LABEL_VALUES + 1);
}

#[test]
fn functions_and_tenants_past_the_kept_series_count_the_same() {
    let s = stats(Instant::now());
    let n = super::series::MAX_CACHED + 10;
    for i in 0..n {
        let f = key(&format!("t{i}"), "f");
        let _running = s.in_flight(&f.tenant, None);
        s.executed(&f, StartKind::Warm, Outcome::Ok, Duration::from_micros(1));
        s.executed(
            &f,
            StartKind::Cold,
            Outcome::Timeout,
            Duration::from_micros(1),
        );
    }
    let text = s.encode();
    let total = |needle: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("strata_invocations_total{") && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    // Every invocation counted once, kept series or not.
    assert_eq!(total(r#"outcome="ok""#), n as u64);
    assert_eq!(total(r#"outcome="timeout""#), n as u64);
    // Every guard dropped: no tenant's gauge is left up.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("strata_concurrency_in_use{") && !l.ends_with(" 0")),
        "{text}"
    );
    let load = s.snapshot(Instant::now(), 0);
    assert_eq!(load.totals.executed, 2 * n as u64);
    assert_eq!(load.in_flight, 0);
}

#[test]
fn certificate_expiry_series_are_capped_soonest_first_and_replaced_each_sample() {
    let s = stats(Instant::now());
    let now = 1_800_000_000;
    let hosts: Vec<(String, i64)> = (0..MAX_LABEL_VALUES + 5)
        .map(|i| (format!("h{i}.example"), now + 100 + i as i64))
        .collect();
    s.certificate_expiries(&hosts, now);
    let text = s.encode();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("strata_certificate_expiry_seconds{"))
        .collect();
    assert_eq!(
        series.len(),
        MAX_LABEL_VALUES + 1,
        "own series plus `_other`"
    );
    assert!(text.contains("strata_certificate_expiry_seconds{host=\"h0.example\"} 100\n"));
    // The first host past the cap is the soonest of the rest.
    let other = format!("{{host=\"{OTHER_LABEL}\"}} {}\n", 100 + MAX_LABEL_VALUES);
    assert!(text.contains(&other), "no {other}");
    s.certificate_expiries(&[("late.example".into(), now - 5)], now);
    let text = s.encode();
    assert!(
        !text.contains("h0.example"),
        "a deleted certificate's series stays"
    );
    assert!(text.contains("strata_certificate_expiry_seconds{host=\"late.example\"} -5\n"));
}

#[test]
fn counts_from_many_workers_at_once_add_up_exactly_in_the_report() {
    // Each worker records into its own shard of the window and a tenant's shard of the
    // in-flight table; the report must merge them into exactly what happened.
    let t0 = Instant::now();
    let s = stats(t0);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let tenant = TenantId::new(format!("t{}", w % 2)).expect("tenant");
                let f = key(&format!("t{}", w % 2), "f");
                for i in 0..500 {
                    let held = s.in_flight(&tenant, Some(100));
                    s.executed(&f, StartKind::Warm, Outcome::Ok, Duration::ZERO);
                    s.outcome(&f, "1", None, i % 5 == 0, false, None);
                    s.request(true, Duration::from_micros(100));
                    drop(held);
                }
                s.forwarded(&f.to_string(), "rare");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let load = s.snapshot(t0 + Duration::from_secs(1), 0);
    assert_eq!(load.totals.executed, 4000);
    assert_eq!(load.totals.forwarded, 8);
    assert_eq!(load.window.local, 4000);
    assert_eq!(load.window.latency_p50_us, 100);
    assert_eq!(load.in_flight, 0);
    let tenants: Vec<_> = load.tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(tenants, ["t0", "t1"]);
    assert!(load.tenants.iter().all(|t| t.peak_in_flight >= 1));
    let f0 = load.functions.iter().find(|f| f.function == "t0/f");
    assert_eq!(f0.map(|f| (f.executed, f.forwarded)), Some((2000, 4)));
    let mut outcomes = load.outcomes.clone();
    outcomes.sort_by(|a, b| a.function.cmp(&b.function));
    let counts: Vec<_> = outcomes.iter().map(|o| (o.invocations, o.errors)).collect();
    assert_eq!(counts, [(2000, 400), (2000, 400)]);
    assert_eq!(s.snapshot(t0 + Duration::from_secs(2), 0).window.local, 0);
}
