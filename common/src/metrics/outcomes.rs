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

/// Which run an outcome belongs to.
type Key = (FunctionKey, String, Option<String>);

/// The tally.
#[derive(Debug, Default)]
pub(super) struct Tally {
    counts: HashMap<Key, [u32; 3]>,
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
        c[0] = c[0].saturating_add(1);
        c[1] = c[1].saturating_add(u32::from(error));
        c[2] = c[2].saturating_add(u32::from(platform_failure));
    }

    /// Takes at most [`REPORTED`] entries out of the tally.
    pub fn drain(&mut self) -> Vec<VersionOutcomes> {
        let keys: Vec<Key> = self.counts.keys().take(REPORTED).cloned().collect();
        keys.into_iter()
            .filter_map(|k| {
                let [invocations, errors, platform_failures] = self.counts.remove(&k)?;
                let (function, version, canary_release) = k;
                Some(VersionOutcomes {
                    function,
                    version,
                    canary_release,
                    invocations,
                    errors,
                    platform_failures,
                })
            })
            .collect()
    }
}
