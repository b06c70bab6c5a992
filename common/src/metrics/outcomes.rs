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

/// One (version, release) run of a function and its counts.
#[derive(Debug)]
struct Entry {
    version: String,
    canary_release: Option<String>,
    counts: Counts,
}

/// One entry's counts: invocations, errors, platform failures, and peak samples.
#[derive(Debug, Default)]
struct Counts {
    n: [u32; 3],
    peaks: Vec<u64>,
}

/// The tally: by function, then its runs (one or two versions and releases at a time,
/// searched in place), so a repeat invocation copies no names.
#[derive(Debug)]
pub(super) struct Tally {
    functions: HashMap<FunctionKey, Vec<Entry>>,
    /// Entries across all functions.
    entries: usize,
    /// Entries tallied at most ([`MAX_KEYS`], or a shard's share of it).
    max_keys: usize,
}

impl Default for Tally {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl Tally {
    /// An empty tally of at most `max_keys` entries.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            functions: HashMap::new(),
            entries: 0,
            max_keys,
        }
    }

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
        let full = self.entries >= self.max_keys;
        let runs = match self.functions.get_mut(function) {
            Some(runs) => runs,
            None if full => return,
            None => self.functions.entry(function.clone()).or_default(),
        };
        let found = runs
            .iter()
            .position(|e| e.version == version && e.canary_release.as_deref() == canary_release);
        let at = match found {
            Some(i) => i,
            None if full => return,
            None => {
                runs.push(Entry {
                    version: version.to_owned(),
                    canary_release: canary_release.map(str::to_owned),
                    counts: Counts::default(),
                });
                self.entries += 1;
                runs.len() - 1
            }
        };
        let Some(c) = runs.get_mut(at).map(|e| &mut e.counts) else {
            return;
        };
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
    #[cfg(test)]
    pub fn drain(&mut self) -> Vec<VersionOutcomes> {
        self.drain_at_most(REPORTED)
    }

    /// Takes at most `max` entries out of the tally.
    pub fn drain_at_most(&mut self, max: usize) -> Vec<VersionOutcomes> {
        let mut out = Vec::new();
        let keys: Vec<FunctionKey> = self.functions.keys().cloned().collect();
        for function in keys {
            let room = max - out.len();
            if room == 0 {
                break;
            }
            let Some(runs) = self.functions.get_mut(&function) else {
                continue;
            };
            let taken: Vec<Entry> = runs.drain(..runs.len().min(room)).collect();
            if runs.is_empty() {
                self.functions.remove(&function);
            }
            self.entries -= taken.len();
            out.extend(taken.into_iter().map(|e| {
                let [invocations, errors, platform_failures] = e.counts.n;
                VersionOutcomes {
                    function: function.clone(),
                    version: e.version,
                    canary_release: e.canary_release,
                    invocations,
                    errors,
                    platform_failures,
                    peak_bytes: e.counts.peaks,
                }
            }));
        }
        out
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

    #[test]
    fn the_tally_is_bounded_and_drained_a_report_at_a_time() {
        let mut t = Tally::default();
        let key = |i: usize| FunctionKey {
            tenant: TenantId::new("t").expect("tenant"),
            name: FunctionName::new(format!("f{}", i / 2)).expect("name"),
        };
        // Two versions per function; past MAX_KEYS entries nothing new is tallied, but
        // the entries already there still count.
        for i in 0..MAX_KEYS + 10 {
            t.add(&key(i), &(i % 2).to_string(), None, false, false, None);
        }
        t.add(&key(0), "0", None, true, false, None);
        let mut total = 0;
        let mut first = None;
        loop {
            let out = t.drain();
            if out.is_empty() {
                break;
            }
            assert!(out.len() <= REPORTED);
            total += out.len();
            first = first.or_else(|| {
                out.iter()
                    .find(|o| o.function == key(0) && o.version == "0")
                    .map(|o| (o.invocations, o.errors))
            });
        }
        assert_eq!(total, MAX_KEYS);
        assert_eq!(first, Some((2, 1)));
    }
}
