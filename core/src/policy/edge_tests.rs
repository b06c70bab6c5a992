//! Unit tests of the POP's planner, on a hand-driven clock.

use super::*;
use crate::model::{FunctionName, TenantId};
use crate::policy::placement::PlacementConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Rel {
    #[default]
    Current,
    Next,
}

fn key(name: &str) -> FunctionKey {
    FunctionKey {
        tenant: TenantId::new("t").expect("valid"),
        name: FunctionName::new(name).expect("valid"),
    }
}

fn planner(now: Instant) -> EdgePlanner {
    EdgePlanner::new(PlacementPolicy::new(PlacementConfig::default()), now, 16)
}

/// A function pinned to the edge: placement runs it here whenever it can.
fn edge_config() -> FunctionConfig {
    FunctionConfig {
        placement: Placement::Edge,
        ..FunctionConfig::default()
    }
}

fn ready(f: &FunctionConfig) -> Facts<'_, Rel> {
    Facts {
        function: Some(f),
        release: Rel::Current,
        module_bytes: Some(1 << 20),
        planned_instances: 0,
    }
}

const BOTH: Slots = Slots {
    node: true,
    lease: true,
};

fn never() -> Slots {
    panic!("the planner drew slots it must not touch")
}

#[test]
fn an_event_is_forwarded_pinned_whoever_calls() {
    for caller in [Caller::Known, Caller::UnknownToken, Caller::Anonymous] {
        assert_eq!(
            EdgePlanner::<FunctionKey>::screen::<Rel>(true, caller),
            Some(Plan::forward(ForwardReason::Pinned))
        );
    }
}

#[test]
fn an_unknown_token_is_forwarded_and_no_credential_is_refused() {
    let screen = EdgePlanner::<FunctionKey>::screen::<Rel>;
    assert_eq!(screen(false, Caller::Known), None);
    assert_eq!(
        screen(false, Caller::UnknownToken),
        Some(Plan::forward(ForwardReason::Unknown))
    );
    assert_eq!(
        screen(false, Caller::Anonymous),
        Some(Plan::Reject(Refusal::Unauthenticated))
    );
}

#[test]
fn a_ready_edge_function_with_both_slots_runs_here_on_its_release() {
    let now = Instant::now();
    let f = edge_config();
    let facts = Facts {
        release: Rel::Next,
        ..ready(&f)
    };
    let planned = planner(now).plan(now, &key("f"), &facts, || BOTH);
    assert_eq!(planned.plan, Plan::RunLocal { release: Rel::Next });
    assert_eq!(planned.prepare_release, None);
}

#[test]
fn dead_letter_sync_is_pinned_to_the_region_without_touching_the_lease() {
    let now = Instant::now();
    let f = FunctionConfig {
        dead_letter_sync: true,
        ..edge_config()
    };
    let planned = planner(now).plan(now, &key("f"), &ready(&f), never);
    assert_eq!(planned.plan, Plan::forward(ForwardReason::Pinned));
}

#[test]
fn a_resource_group_pins_the_function_to_the_region() {
    let now = Instant::now();
    let f = FunctionConfig {
        resource_group: Some("carts".into()),
        ..edge_config()
    };
    let planned = planner(now).plan(now, &key("f"), &ready(&f), || BOTH);
    assert_eq!(planned.plan, Plan::forward(ForwardReason::Pinned));
}

#[test]
fn over_its_rate_limit_a_function_is_refused_before_drawing_slots() {
    let now = Instant::now();
    let f = FunctionConfig {
        rate_limit_rps: Some(1),
        ..edge_config()
    };
    let mut p = planner(now);
    let first = p.plan(now, &key("f"), &ready(&f), || BOTH);
    assert!(matches!(first.plan, Plan::RunLocal { .. }));
    let second = p.plan(now, &key("f"), &ready(&f), never);
    let Plan::Reject(Refusal::RateLimited { rps, retry_after }) = second.plan else {
        panic!("expected a rate refusal, got {second:?}");
    };
    assert_eq!(rps.get(), 1);
    assert!(retry_after > Duration::ZERO);
    // Another function has its own limit.
    let other = p.plan(now, &key("g"), &ready(&f), || BOTH);
    assert!(matches!(other.plan, Plan::RunLocal { .. }));
}

#[test]
fn only_a_missing_lease_slot_allows_the_uncounted_fallback() {
    let now = Instant::now();
    let f = edge_config();
    let mut p = planner(now);
    let no_lease = p.plan(now, &key("f"), &ready(&f), || Slots {
        node: true,
        lease: false,
    });
    assert_eq!(
        no_lease.plan,
        Plan::Forward {
            reason: ForwardReason::OverCapacity,
            uncounted_fallback: true
        }
    );
    let no_node = p.plan(now, &key("f"), &ready(&f), || Slots {
        node: false,
        lease: false,
    });
    assert_eq!(no_node.plan, Plan::forward(ForwardReason::OverCapacity));
}

#[test]
fn a_release_whose_module_is_not_here_is_forwarded_and_prepared() {
    let now = Instant::now();
    let f = edge_config();
    let facts = Facts {
        release: Rel::Next,
        module_bytes: None,
        ..ready(&f)
    };
    let planned = planner(now).plan(now, &key("f"), &facts, never);
    assert_eq!(planned.plan, Plan::forward(ForwardReason::NotReady));
    assert_eq!(planned.prepare_release, Some(Rel::Next));
    assert!(
        planned.fetch_artifact,
        "an edge-pinned function wants its code"
    );
    // On the current release, the prefetch is the placement's (`fetch_artifact`) only.
    let current = Facts {
        module_bytes: None,
        ..ready(&f)
    };
    assert_eq!(
        planner(now)
            .plan(now, &key("f"), &current, never)
            .prepare_release,
        None
    );
}

#[test]
fn an_unknown_function_is_forwarded_without_drawing_slots() {
    let now = Instant::now();
    let facts: Facts<'_, Rel> = Facts {
        function: None,
        release: Rel::Current,
        module_bytes: None,
        planned_instances: 0,
    };
    let mut p = planner(now);
    // Seen once it is rare; once popular, still forwarded: the POP does not know it.
    assert_eq!(
        p.plan(now, &key("f"), &facts, never).plan,
        Plan::forward(ForwardReason::Rare)
    );
    let mut last = None;
    for i in 1..20 {
        last = Some(p.plan(
            now + Duration::from_millis(10 * i),
            &key("f"),
            &facts,
            never,
        ));
    }
    let last = last.expect("planned");
    assert_eq!(last.plan, Plan::forward(ForwardReason::Unknown));
    assert!(!last.fetch_artifact, "nothing to fetch without its digest");
}

#[test]
fn the_budget_counts_the_module_and_every_planned_instance_at_least_one() {
    let f = FunctionConfig {
        memory_mb: 64,
        ..FunctionConfig::default()
    };
    assert_eq!(budget_cost(&f, None, 0), 64 << 20);
    assert_eq!(budget_cost(&f, Some(1000), 0), (64 << 20) + 1000);
    assert_eq!(budget_cost(&f, Some(1000), 3), 3 * (64 << 20) + 1000);
}

fn hosted(name: &str) -> Option<Rel> {
    match name {
        "next" => Some(Rel::Next),
        "current" => Some(Rel::Current),
        _ => None,
    }
}

fn release_facts<'a>(named: Option<&'a str>, pinned: Option<&'a str>) -> ReleaseFacts<'a, Rel> {
    ReleaseFacts {
        named,
        pinned,
        canary_percent: 10,
        next: Some(Rel::Next),
        request_id: 0,
        affinity: None,
    }
}

fn no_refusal() -> bool {
    false
}

#[test]
fn the_region_named_release_wins_if_hosted_else_the_current_one() {
    let chosen = |named, pinned| release(&release_facts(named, pinned), hosted, no_refusal);
    let decided = |release| ReleaseChoice {
        release,
        sampled: None,
        refused_by_next: false,
    };
    assert_eq!(chosen(Some("next"), Some("current")), decided(Rel::Next));
    assert_eq!(chosen(None, Some("next")), decided(Rel::Next));
    assert_eq!(
        chosen(Some("elsewhere"), Some("next")),
        decided(Rel::Current)
    );
}

#[test]
fn an_undecided_function_is_sampled_with_the_regions_share_and_draw() {
    // The draw is the request id's high half: 9 is in a 10% share, 10 is not.
    let at = |draw: u64| ReleaseFacts {
        request_id: u128::from(draw) << 64,
        ..release_facts(None, None)
    };
    let next = release(&at(9), hosted, no_refusal);
    assert_eq!((next.release, next.sampled), (Rel::Next, Some(Rel::Next)));
    let current = release(&at(10), hosted, || panic!("asked about next"));
    assert_eq!(
        (current.release, current.sampled),
        (Rel::Current, Some(Rel::Current))
    );
    // No share, or no next release here: the current release, unsampled.
    for facts in [
        ReleaseFacts {
            canary_percent: 0,
            ..at(9)
        },
        ReleaseFacts {
            next: None,
            ..at(9)
        },
    ] {
        let c = release(&facts, hosted, no_refusal);
        assert_eq!((c.release, c.sampled), (Rel::Current, None));
    }
}

#[test]
fn a_sample_of_a_next_release_that_refuses_the_module_runs_on_current_unsampled() {
    let facts = ReleaseFacts {
        request_id: 9 << 64,
        ..release_facts(None, None)
    };
    assert_eq!(
        release(&facts, hosted, || true),
        ReleaseChoice {
            release: Rel::Current,
            sampled: None,
            refused_by_next: true,
        }
    );
}

#[test]
fn only_an_unreachable_fleet_lets_a_lease_less_run_go_uncounted() {
    assert!(run_uncounted(true, false));
    assert!(!run_uncounted(true, true));
    assert!(!run_uncounted(false, false));
}

#[test]
fn draws_regardless_means_the_plan_always_draws_whatever_came_before() {
    let now = Instant::now();
    let configs = [
        FunctionConfig::default(),
        edge_config(),
        FunctionConfig {
            placement: Placement::Region,
            ..FunctionConfig::default()
        },
        FunctionConfig {
            resource_group: Some("g".into()),
            ..edge_config()
        },
        FunctionConfig {
            dead_letter_sync: true,
            ..edge_config()
        },
        FunctionConfig {
            rate_limit_rps: Some(1),
            ..edge_config()
        },
        FunctionConfig {
            rate_limit_rps: Some(0),
            ..edge_config()
        },
    ];
    let mut regardless = 0;
    for f in &configs {
        for module_bytes in [None, Some(1 << 20)] {
            let facts = Facts {
                module_bytes,
                ..ready(f)
            };
            // A fresh planner, and one that has planned the same function many times
            // (popular, and past a rate limit of 1/s if it has one).
            let mut p = planner(now);
            for _ in 0..20 {
                p.plan(now, &key("f"), &facts, || BOTH);
            }
            for p in [&mut planner(now), &mut p] {
                let mut draws = 0;
                p.plan(now, &key("f"), &facts, || {
                    draws += 1;
                    BOTH
                });
                if EdgePlanner::<FunctionKey>::draws_regardless(&facts) {
                    regardless += 1;
                    assert_eq!(draws, 1, "{f:?} with module {module_bytes:?}");
                }
            }
        }
    }
    // Default, edge, region, resource group and a zero rate limit, each on both planners.
    assert_eq!(regardless, 10);
    let unknown = Facts::<Rel> {
        function: None,
        release: Rel::Current,
        module_bytes: Some(1),
        planned_instances: 0,
    };
    assert!(!EdgePlanner::<FunctionKey>::draws_regardless(&unknown));
}
