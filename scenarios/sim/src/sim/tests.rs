//! How the simulator deals POPs and regions to shards.

use super::{Home, deal};

#[test]
fn shards_are_dealt_so_that_each_gets_about_the_same_work() {
    // 6 POPs, 3 regions: POPs 0-3 nearest region 0, POPs 4-5 region 1, none region 2.
    let rtt: Vec<u64> = [
        [1, 5, 9],
        [1, 5, 9],
        [2, 5, 9],
        [2, 5, 9],
        [5, 1, 9],
        [5, 2, 9],
    ]
    .concat();
    let (pops, regions) = deal(&rtt, 6, 3, 2);
    let shards = |h: &[Home]| h.iter().map(|h| h.shard).collect::<Vec<_>>();
    // Forwards weigh half a POP: region 0 (weight 2) goes to shard 0, regions 1 (1) and
    // 2 (0) to shard 1; the POPs then even it out to within one POP.
    assert_eq!(shards(&regions), [0, 1, 1]);
    let load = |s: u32| {
        let r: f64 = [2.0, 1.0, 0.0]
            .iter()
            .zip(&regions)
            .filter(|(_, h)| h.shard == s)
            .map(|(w, _)| w)
            .sum();
        r + pops.iter().filter(|h| h.shard == s).count() as f64
    };
    assert!(
        (load(0) - load(1)).abs() <= 1.0,
        "{} vs {}",
        load(0),
        load(1)
    );
    // Indices count up per shard in order.
    for s in 0..2 {
        let idx: Vec<u32> = pops
            .iter()
            .filter(|h| h.shard == s)
            .map(|h| h.index)
            .collect();
        assert_eq!(idx, (0..idx.len() as u32).collect::<Vec<_>>());
    }
    assert_eq!((regions[1].index, regions[2].index), (0, 1));
}
