//! Warm-pool lanes: which bound a warm pool counts against, and which pools make room
//! when a lane is full.
//!
//! Every pool lives in one table bounded by [`super::SandboxConfig::max_warm_pools`]. Most
//! pools are in the [`WarmLane::Dedicated`] lane, the table's own least-recently-used
//! order. The region's on-demand fleet (rare functions) runs its reactors in the
//! [`WarmLane::OnDemand`] lane: a sub-budget of at most [`OnDemandBudget::max_pools`] pools
//! with its own keep-alive, evicting only among on-demand pools, so a burst of rare
//! functions can never push out a frequent function's warm instances. When the table is
//! full of dedicated pools, an on-demand pool is simply not kept (its invocation runs in a
//! one-off instance). A dedicated pool that needs room evicts the table's least recently
//! used pool of either lane: the frequent fleet always has at least `max_warm_pools -
//! max_pools` pools.
//!
//! A pool changes lane with the function: checked out in the other lane, it moves (its
//! instances and their state stay), and a pool that moves into a full on-demand lane makes
//! room there like a new one would.
//!
//! Pure bookkeeping: never touches instances or locks; [`super::pool`] applies the choice.

use std::time::Duration;

/// Which budget a warm pool counts against (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WarmLane {
    /// The sandbox's bound and keep-alive (`max_warm_pools`, `warm_idle_ms`), least
    /// recently used of all pools dropped first.
    #[default]
    Dedicated,
    /// The on-demand fleet's sub-budget within that bound.
    OnDemand(OnDemandBudget),
}

/// The on-demand lane's bound, fixed by whoever runs that fleet (the region's `[fleets]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemandBudget {
    /// Most pools in the lane; 0 keeps none (every call starts cold).
    pub max_pools: usize,
    /// How long an idle instance of an on-demand pool is kept.
    pub keep_alive: Duration,
}

impl WarmLane {
    /// Whether this is the on-demand lane.
    pub fn is_on_demand(self) -> bool {
        matches!(self, Self::OnDemand(_))
    }

    /// The keep-alive of this lane's idle instances, given the dedicated one.
    pub(super) fn keep_alive(self, dedicated: Duration) -> Duration {
        match self {
            Self::Dedicated => dedicated,
            Self::OnDemand(b) => b.keep_alive,
        }
    }
}

/// One pool in the table, as eviction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resident {
    /// In the on-demand lane.
    pub(super) on_demand: bool,
    /// The table's use counter at its last checkout (higher is more recent).
    pub(super) used: u64,
}

/// Which pools to drop so the table fits its bounds once a pool of `lane` is in it, and
/// whether an incoming pool fits then (when it does not, it is used once and not kept).
///
/// `residents` is the table as it is; `incoming` is true when the pool is not in it yet
/// (a pool that is already there, moving into `lane`, is in `residents` with its new lane
/// and the newest `used`, so it is its own lane's last choice). Victims are in eviction
/// order.
pub(super) fn make_room<'a, K: Clone + 'a>(
    residents: impl Iterator<Item = (&'a K, Resident)>,
    lane: WarmLane,
    max_pools: usize,
    incoming: bool,
) -> (Vec<K>, bool) {
    let extra = usize::from(incoming);
    let budget = match lane {
        WarmLane::OnDemand(b) => b.max_pools,
        WarmLane::Dedicated => usize::MAX,
    };
    if max_pools == 0 || (incoming && budget == 0) {
        return (Vec::new(), false);
    }
    let mut all: Vec<(u64, bool, &K)> = residents.map(|(k, r)| (r.used, r.on_demand, k)).collect();
    all.sort_unstable_by_key(|&(used, _, _)| used);
    let mut total = all.len();
    let mut on_demand = all.iter().filter(|(_, od, _)| *od).count();
    let mut victims = Vec::new();
    match lane {
        WarmLane::Dedicated => {
            // The table's least recently used pools, of either lane.
            for (_, _, k) in &all {
                if total + extra <= max_pools {
                    break;
                }
                victims.push((*k).clone());
                total -= 1;
            }
            (victims, total + extra <= max_pools)
        }
        WarmLane::OnDemand(_) => {
            // Only the on-demand lane's own pools, least recently used first.
            for (_, _, k) in all.iter().filter(|(_, od, _)| *od) {
                if total + extra <= max_pools && on_demand + extra <= budget {
                    break;
                }
                victims.push((*k).clone());
                total -= 1;
                on_demand -= 1;
            }
            (
                victims,
                total + extra <= max_pools && on_demand + extra <= budget,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RARE2: WarmLane = WarmLane::OnDemand(OnDemandBudget {
        max_pools: 2,
        keep_alive: Duration::from_secs(60),
    });

    /// A table of (name, lane, last use) driven the way [`super::super::pool`] drives it.
    struct Table {
        rows: Vec<(&'static str, Resident)>,
        clock: u64,
        max_pools: usize,
    }

    impl Table {
        fn new(max_pools: usize) -> Self {
            Self {
                rows: Vec::new(),
                clock: 0,
                max_pools,
            }
        }

        /// Checks `name` out in `lane`; returns what was evicted and whether `name`'s pool
        /// is in the table afterwards.
        fn use_(&mut self, name: &'static str, lane: WarmLane) -> (Vec<&'static str>, bool) {
            self.clock += 1;
            let me = Resident {
                on_demand: lane.is_on_demand(),
                used: self.clock,
            };
            let incoming = match self.rows.iter_mut().find(|(n, _)| *n == name) {
                Some(row) => {
                    row.1 = me;
                    false
                }
                None => true,
            };
            let rows = self.rows.iter().map(|(n, r)| (n, *r));
            let (victims, fits) = make_room(rows, lane, self.max_pools, incoming);
            self.rows.retain(|(n, _)| !victims.contains(n));
            if incoming && fits {
                self.rows.push((name, me));
            }
            let kept = self.rows.iter().any(|(n, _)| *n == name);
            (victims, kept)
        }

        fn names(&self) -> Vec<&'static str> {
            let mut n: Vec<_> = self.rows.iter().map(|(n, _)| *n).collect();
            n.sort_unstable();
            n
        }
    }

    #[test]
    fn the_on_demand_lane_evicts_its_own_least_recently_used_pool_only() {
        let mut t = Table::new(4);
        let dedicated = WarmLane::Dedicated;
        assert_eq!(t.use_("hot", dedicated), (vec![], true));
        assert_eq!(t.use_("a", RARE2), (vec![], true));
        assert_eq!(t.use_("b", RARE2), (vec![], true));
        // The lane is full: its least recently used pool goes, never `hot`, although `hot`
        // is the least recently used of all.
        assert_eq!(t.use_("c", RARE2), (vec!["a"], true));
        // A call to `b` makes `c` the lane's oldest.
        assert_eq!(t.use_("b", RARE2), (vec![], true));
        assert_eq!(t.use_("d", RARE2), (vec!["c"], true));
        assert_eq!(t.names(), ["b", "d", "hot"]);
    }

    #[test]
    fn a_table_full_of_dedicated_pools_keeps_no_on_demand_pool() {
        let mut t = Table::new(2);
        t.use_("f1", WarmLane::Dedicated);
        t.use_("f2", WarmLane::Dedicated);
        assert_eq!(t.use_("rare", RARE2), (vec![], false));
        assert_eq!(t.names(), ["f1", "f2"]);
        // With one dedicated pool and room for one more, the lane takes the free place and
        // then evicts within itself.
        let mut t = Table::new(2);
        t.use_("f1", WarmLane::Dedicated);
        assert_eq!(t.use_("a", RARE2), (vec![], true));
        assert_eq!(t.use_("b", RARE2), (vec!["a"], true));
        assert_eq!(t.names(), ["b", "f1"]);
    }

    #[test]
    fn a_dedicated_pool_evicts_the_least_recently_used_of_either_lane() {
        let mut t = Table::new(3);
        t.use_("a", RARE2);
        t.use_("f1", WarmLane::Dedicated);
        t.use_("b", RARE2);
        assert_eq!(t.use_("f2", WarmLane::Dedicated), (vec!["a"], true));
        assert_eq!(t.use_("f3", WarmLane::Dedicated), (vec!["f1"], true));
    }

    #[test]
    fn a_pool_moving_into_a_full_on_demand_lane_makes_room_there() {
        let mut t = Table::new(8);
        t.use_("a", RARE2);
        t.use_("b", RARE2);
        t.use_("was-hot", WarmLane::Dedicated);
        // It turned rare: the lane's oldest goes, and it stays with its instances.
        assert_eq!(t.use_("was-hot", RARE2), (vec!["a"], true));
        assert_eq!(t.names(), ["b", "was-hot"]);
        // A rare function turning frequent leaves the lane.
        assert_eq!(t.use_("b", WarmLane::Dedicated), (vec![], true));
        assert_eq!(t.use_("c", RARE2), (vec![], true));
    }

    #[test]
    fn a_zero_budget_keeps_no_on_demand_pool() {
        let none = WarmLane::OnDemand(OnDemandBudget {
            max_pools: 0,
            keep_alive: Duration::from_secs(60),
        });
        let mut t = Table::new(4);
        assert_eq!(t.use_("a", none), (vec![], false));
        t.use_("f", WarmLane::Dedicated);
        // A dedicated pool turning rare under a zero budget leaves the table itself.
        assert_eq!(t.use_("f", none), (vec!["f"], false));
        assert!(t.names().is_empty());
    }

    /// The same order through a real sandbox's pools, with warm instances and their state.
    #[test]
    fn rare_reactors_keep_their_state_in_their_lane_and_never_evict_a_dedicated_pool() {
        use super::super::tests::{block_on, invocation, sandbox_with, wasm};
        use super::super::{SandboxConfig, WarmKey};
        use crate::model::{FunctionKey, FunctionName, TenantId};
        let s = sandbox_with(SandboxConfig {
            max_warm_pools: 3,
            ..SandboxConfig::default()
        });
        let m = s
            .compile(&wasm(include_str!("../../../examples/counter.wat")))
            .expect("counter compiles");
        let key = |name: &str| WarmKey {
            function: FunctionKey {
                tenant: TenantId::new("t").expect("tenant"),
                name: FunctionName::new(name).expect("name"),
            },
            version: "$LATEST".into(),
            digest: m.digest(),
            memory_bytes: 16 << 20,
        };
        let count = |name: &str, lane| {
            let e = block_on(s.run_reactor_in(&key(name), &m, invocation(b""), None, lane))
                .expect("runs");
            String::from_utf8(e.stdout).expect("digits")
        };
        let rare = WarmLane::OnDemand(OnDemandBudget {
            max_pools: 1,
            keep_alive: Duration::from_secs(3600),
        });
        assert_eq!(count("hot", WarmLane::Dedicated), "1");
        for i in 0..5 {
            // Each rare reactor keeps its instance between its own calls.
            let name = format!("rare-{i}");
            let calls = (count(&name, rare), count(&name, rare));
            assert_eq!(calls, ("1".to_owned(), "2".to_owned()));
        }
        assert_eq!(
            count("hot", WarmLane::Dedicated),
            "2",
            "hot survived the burst"
        );
        assert_eq!(count("rare-4", rare), "3", "the lane's latest pool is kept");
        assert_eq!(count("rare-0", rare), "1", "older rare pools were evicted");
    }
}
