//! Unit tests of the region's planner, on a hand-driven clock.

use super::*;
use crate::policy::canary::CanaryConfig;
use crate::policy::placement::PlacementConfig;
use std::time::Duration;

/// Release names as a region knows them.
fn side_of(name: &str) -> Option<Side> {
    match name {
        "cur" => Some(Side::Current),
        "nxt" => Some(Side::Next),
        _ => None,
    }
}

fn one_fleet() -> OriginPlanner<&'static str> {
    OriginPlanner::new(None)
}

fn facts<'a>(
    config: &'a FunctionConfig,
    canary: Option<&'a Canary<&'static str>>,
) -> Facts<'a, &'static str> {
    Facts {
        config,
        request_id: 0,
        affinity: None,
        canary,
    }
}

fn canary(percent: u8) -> Canary<&'static str> {
    Canary::new(CanaryConfig {
        percent,
        min_samples: 2,
        min_failures: 1,
        ..CanaryConfig::default()
    })
}

/// A request id whose canary draw is `draw` (the draw is the id's high half).
fn request_with_draw(draw: u64) -> u128 {
    u128::from(draw) << 64
}

#[test]
fn every_refusing_step_comes_before_the_run_that_compiles() {
    for fleet in [Fleet::Dedicated, Fleet::OnDemand] {
        let plan = Plan {
            fleet,
            release: Side::Current,
            counted: false,
        };
        let steps = plan.steps();
        assert_eq!(steps.last(), Some(&Step::Run), "{fleet:?}");
        assert_eq!(steps.iter().filter(|s| **s == Step::Run).count(), 1);
        assert_eq!(steps.first(), Some(&Step::Tenant), "the tenant's 429 first");
        let share = steps.iter().position(|s| *s == Step::Share);
        let slot = steps.iter().position(|s| *s == Step::Slot);
        assert!(share < slot, "a share is taken before waiting for a slot");
    }
}

#[test]
fn only_the_dedicated_fleet_checks_the_region_capacity_before_the_share() {
    let dedicated = Plan {
        fleet: Fleet::Dedicated,
        release: Side::Current,
        counted: false,
    };
    assert_eq!(
        dedicated.steps(),
        [
            Step::Tenant,
            Step::Capacity,
            Step::Share,
            Step::Slot,
            Step::Run
        ]
    );
    let on_demand = Plan {
        fleet: Fleet::OnDemand,
        ..dedicated
    };
    assert_eq!(
        on_demand.steps(),
        [Step::Tenant, Step::Share, Step::Slot, Step::Run]
    );
}

#[test]
fn without_fleets_everything_is_dedicated_on_the_current_release_uncounted() {
    let mut p = one_fleet();
    let config = FunctionConfig::default();
    let plan = p.plan(Instant::now(), &"f", &facts(&config, None), side_of);
    assert_eq!(
        plan,
        Plan {
            fleet: Fleet::Dedicated,
            release: Side::Current,
            counted: false
        }
    );
}

#[test]
fn a_function_is_frequent_above_the_bar_and_stays_until_below_the_exit() {
    let placement = PlacementPolicy::with_hasher(
        PlacementConfig {
            window: Duration::from_secs(10),
            enter_score: 3.0,
            exit_score: 1.5,
            ..PlacementConfig::default()
        },
        RandomState::new(),
    );
    let mut p: OriginPlanner<&str> = OriginPlanner::new(Some(placement));
    let config = FunctionConfig::default();
    let t0 = Instant::now();
    let mut at = |t, k| p.plan(t, k, &facts(&config, None), side_of).fleet;
    use Fleet::{Dedicated, OnDemand};
    let seen: Vec<Fleet> = (0..4).map(|_| at(t0, &"f")).collect();
    assert_eq!(seen, [OnDemand, OnDemand, Dedicated, Dedicated]);
    // Score 4 decays to ~1.5 after 10 s, plus this request ~2.5: below the entry bar,
    // above the exit, so it stays.
    assert_eq!(at(t0 + Duration::from_secs(10), &"f"), Dedicated);
    // Long idle: ~0 plus this request is below the exit bar, back to on demand.
    assert_eq!(at(t0 + Duration::from_secs(60), &"f"), OnDemand);
    // Another function is judged on its own rate.
    assert_eq!(at(t0, &"g"), OnDemand);
}

#[test]
fn a_known_pin_wins_uncounted_and_an_unknown_one_is_the_current_release() {
    let mut p = one_fleet();
    let c = canary(100);
    for (pin, side) in [
        ("nxt", Side::Next),
        ("cur", Side::Current),
        ("??", Side::Current),
    ] {
        let config = FunctionConfig {
            runtime: Some(pin.into()),
            ..FunctionConfig::default()
        };
        for canary in [None, Some(&c)] {
            let plan = p.plan(Instant::now(), &"f", &facts(&config, canary), side_of);
            assert_eq!((plan.release, plan.counted), (side, false), "{pin}");
        }
    }
}

#[test]
fn an_undecided_function_is_sampled_by_the_requests_draw_and_counted() {
    let mut p = one_fleet();
    let c = canary(10);
    let config = FunctionConfig::default();
    let mut with_draw = |draw| {
        let f = Facts {
            request_id: request_with_draw(draw),
            ..facts(&config, Some(&c))
        };
        let plan = p.plan(Instant::now(), &"f", &f, side_of);
        (plan.release, plan.counted)
    };
    assert_eq!(with_draw(9), (Side::Next, true));
    assert_eq!(with_draw(10), (Side::Current, true));
    // An affinity key draws the same side whatever the request id.
    let mut keyed = |id| {
        let f = Facts {
            request_id: id,
            affinity: Some("user-7"),
            ..facts(&config, Some(&c))
        };
        p.plan(Instant::now(), &"f", &f, side_of).release
    };
    let first = keyed(request_with_draw(0));
    assert!((1..50).all(|d| keyed(request_with_draw(d)) == first));
}

#[test]
fn a_decided_function_runs_on_its_verdict_uncounted_and_no_share_counts_nothing() {
    let mut c = canary(50);
    c.restore("pinned", Verdict::Pinned);
    c.restore("promoted", Verdict::Promoted);
    assert_eq!(release(&c, &"pinned", None, 0), (Side::Current, false));
    assert_eq!(release(&c, &"promoted", None, 99), (Side::Next, false));
    let none = canary(0);
    assert_eq!(release(&none, &"f", None, 0), (Side::Current, false));
    // What POPs are told.
    assert_eq!(decided(Verdict::Undecided, None), None);
    assert_eq!(decided(Verdict::Promoted, None), Some(Side::Next));
    assert_eq!(decided(Verdict::Pinned, None), Some(Side::Current));
    assert_eq!(
        decided(Verdict::Promoted, Some(Side::Current)),
        Some(Side::Current)
    );
}

#[test]
fn a_link_refusal_by_next_is_its_failure_and_reruns_on_current() {
    let next = Plan {
        fleet: Fleet::Dedicated,
        release: Side::Next,
        counted: true,
    };
    assert_eq!(
        after_run(next.release, next.counted, Ran::LinkRefused),
        After {
            rerun_on_current: true,
            count: Some((Side::Next, true))
        }
    );
    let uncounted = Plan {
        counted: false,
        ..next
    };
    assert_eq!(
        after_run(uncounted.release, uncounted.counted, Ran::LinkRefused),
        After {
            rerun_on_current: true,
            count: None
        }
    );
    // The current release refusing a module is the module's error, not a rerun.
    let current = Plan {
        release: Side::Current,
        ..next
    };
    assert!(!after_run(current.release, current.counted, Ran::LinkRefused).rerun_on_current);
}

#[test]
fn a_guest_run_is_counted_when_planned_and_an_error_before_it_never() {
    let plan = Plan {
        fleet: Fleet::OnDemand,
        release: Side::Next,
        counted: true,
    };
    let done =
        |platform_fault| after_run(plan.release, plan.counted, Ran::Done { platform_fault }).count;
    assert_eq!(done(true), Some((Side::Next, true)));
    assert_eq!(done(false), Some((Side::Next, false)));
    assert_eq!(
        after_run(plan.release, plan.counted, Ran::Failed).count,
        None
    );
    let uncounted = Plan {
        counted: false,
        ..plan
    };
    assert_eq!(
        after_run(
            uncounted.release,
            uncounted.counted,
            Ran::Done {
                platform_fault: true
            }
        ),
        After {
            rerun_on_current: false,
            count: None
        }
    );
}

#[test]
fn out_of_memory_is_retried_once_at_double_up_to_the_ceiling_with_auto_resize() {
    let config = FunctionConfig {
        memory_mb: 64,
        max_memory_mb: Some(200),
        auto_resize: true,
        ..FunctionConfig::default()
    };
    assert_eq!(memory_retry(&config, true, 64), Some(128));
    assert_eq!(memory_retry(&config, true, 128), Some(200), "capped");
    assert_eq!(memory_retry(&config, true, 200), None, "at the ceiling");
    assert_eq!(memory_retry(&config, false, 64), None, "not out of memory");
    let off = FunctionConfig {
        auto_resize: false,
        ..config
    };
    assert_eq!(memory_retry(&off, true, 64), None, "not opted in");
}
