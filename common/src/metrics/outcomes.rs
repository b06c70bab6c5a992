//! Outcomes per function version between two load reports: the edge's share of the
//! evidence the region's runtime canary and alias rollout judges decide on.
//!
//! Bounded: at most [`MAX_KEYS`] (function, version, release) entries are tallied; outcomes
//! of further ones are dropped until a report drains the table (they are samples, not
//! accounts: a judge decides on fewer). A report carries at most [`REPORTED`] entries; the
//! rest wait for the next report. A report that is lost loses its samples.

use crate::model::{FunctionKey, VersionOutcomes};
use std::collections::HashMap;

/// Entries tallied between reports.
pub(super) const MAX_KEYS: usize = 4096;
/// Entries sent in one report.
pub(super) const REPORTED: usize = 1024;

/// Peak samples sent per entry per report: the latest ones, each overwriting the slot of
/// the invocation [`MAX_REPORTED_PEAKS`] before it.
pub const MAX_REPORTED_PEAKS: usize = 64;

/// Which run an outcome belongs to.
type Key = (FunctionKey, String, Option<String>);

/// One entry's counts: invocations, errors, platform failures, and peak samples.
#[derive(Debug, Default)]
struct Counts {
    n: [u32; 3],
    peaks: Vec<u64>,
}

/// The tally.
#[derive(Debug, Default)]
pub(super) struct Tally {
    counts: HashMap<Key, Counts>,
}

impl Tally {
    /// Counts one invocation of `version` of `function`; `canary_release` is the release
    /// the canary sampled, if it did.
    pub fn add(
        &mut self,
        function: &FunctionKey,
        version: &str,
        canary_release: Option<&str>,
        error: bool,
        platform_failure: bool,
        peak_bytes: Option<u64>,
    ) {
        let key = (
            function.clone(),
            version.to_owned(),
            canary_release.map(str::to_owned),
        );
        if self.counts.len() >= MAX_KEYS && !self.counts.contains_key(&key) {
            return;
        }
        let c = self.counts.entry(key).or_default();
        let seen = c.n[0] as usize;
        c.n[0] = c.n[0].saturating_add(1);
        c.n[1] = c.n[1].saturating_add(u32::from(error));
        c.n[2] = c.n[2].saturating_add(u32::from(platform_failure));
        if let Some(peak) = peak_bytes {
            if c.peaks.len() < MAX_REPORTED_PEAKS {
                c.peaks.push(peak);
            } else {
                c.peaks[seen % MAX_REPORTED_PEAKS] = peak;
            }
        }
    }

    /// Takes at most [`REPORTED`] entries out of the tally.
    pub fn drain(&mut self) -> Vec<VersionOutcomes> {
        let keys: Vec<Key> = self.counts.keys().take(REPORTED).cloned().collect();
        keys.into_iter()
            .filter_map(|k| {
                let c = self.counts.remove(&k)?;
                let [invocations, errors, platform_failures] = c.n;
                let (function, version, canary_release) = k;
                Some(VersionOutcomes {
                    function,
                    version,
                    canary_release,
                    invocations,
                    errors,
                    platform_failures,
                    peak_bytes: c.peaks,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionName, TenantId};

    #[test]
    fn counts_and_the_latest_peaks_are_drained_once() {
        let f = FunctionKey {
            tenant: TenantId::new("t").expect("tenant"),
            name: FunctionName::new("f").expect("name"),
        };
        let mut t = Tally::default();
        let n = MAX_REPORTED_PEAKS as u64 + 3;
        for i in 0..n {
            t.add(&f, "1", Some("2026.11"), i == 0, false, Some(i));
        }
        t.add(&f, "1", None, true, true, None);
        let mut out = t.drain();
        out.sort_by_key(|o| o.canary_release.is_none());
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].invocations, out[0].errors), (n as u32, 1));
        assert_eq!(out[0].peak_bytes.len(), MAX_REPORTED_PEAKS);
        // The three latest overwrote the three oldest.
        assert!(out[0].peak_bytes.contains(&(n - 1)));
        assert!(!out[0].peak_bytes.contains(&0));
        assert_eq!((out[1].errors, out[1].platform_failures), (1, 1));
        assert!(out[1].peak_bytes.is_empty());
        assert!(t.drain().is_empty());
    }
}
