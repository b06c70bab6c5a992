//! The runtime canary at a region: which release each invocation runs on, the outcome
//! counts, durable verdicts and the owner notifications they raise.
//!
//! Owns the node side of `common::policy::canary`: the counts and verdicts, from which
//! the origin planner (`common::policy::origin`) chooses each invocation's release (a
//! config pin wins, uncounted; otherwise the request's draw, so a POP and a region agree
//! on a request). Decided
//! verdicts are written to [`Bucket::Canary`] as [`VerdictRecord`]s under `tenant/name`
//! and read back at start-up, so a restart never re-canaries a decided function. A pinned
//! verdict is also the owner's notification (`runtime_incompatible`), listed per tenant.
//! Counts of undecided functions are in memory only: a restart samples them again.
//!
//! POPs follow the verdicts without forwarding: each decided verdict is announced as a
//! [`ReleaseHint`] on a bounded broadcast ([`RuntimeCanary::subscribe`], one receiver per
//! push stream, see [`crate::push`]), and [`RuntimeCanary::releases`] is the whole state a
//! POP gets when it subscribes (or when its stream fell behind the broadcast).

use crate::store::{Bucket, Expect, Store, StoreError};
use common::model::{FunctionKey, FunctionName, TenantId};
use common::policy::canary::{Canary, CanaryConfig, Counts, Side, Verdict};
use common::policy::origin;
use common::sandbox::Release;
use common::wire::ReleaseHint;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, PoisonError};
use tokio::sync::broadcast;
use tracing::{info, warn};

/// A function's canary verdict as stored and served (`GET /v1/runtime`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerdictRecord {
    /// The function's name (within the tenant).
    pub function: String,
    /// `undecided`, `pinned` (stays on the current release) or `promoted` (runs on next).
    #[schema(value_type = String)]
    pub verdict: Verdict,
    /// The current release's name.
    pub current: String,
    /// The next release's name.
    pub next: String,
    /// Outcomes on the current release.
    pub current_invocations: u32,
    /// Platform failures on the current release.
    pub current_failures: u32,
    /// Outcomes on the next release.
    pub next_invocations: u32,
    /// Platform failures on the next release.
    pub next_failures: u32,
    /// When the verdict was reached, ms since the Unix epoch (0 while undecided).
    pub decided_at_ms: u64,
}

impl VerdictRecord {
    fn new(function: &FunctionName, verdict: Verdict, c: Counts, at_ms: u64) -> Self {
        Self {
            function: function.to_string(),
            verdict,
            current: Release::Current.name().into(),
            next: Release::Next.name().into(),
            current_invocations: c.current,
            current_failures: c.current_failures,
            next_invocations: c.next,
            next_failures: c.next_failures,
            decided_at_ms: at_ms,
        }
    }
}

/// A message to a function's owner (`GET /v1/notifications`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Notification {
    /// What happened: `runtime_incompatible` or `rollback`.
    pub kind: String,
    /// The function concerned.
    pub function: String,
    /// What happened, for people.
    pub message: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The verdict with its counts (`runtime_incompatible`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictRecord>,
    /// The alias as rolled back, its `rolled_back` record with the counts (`rollback`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub alias: Option<common::model::Alias>,
}

/// Verdict changes buffered per push stream before a slow one falls behind (it then gets
/// the whole state again instead: see [`crate::push`]).
const RELEASE_CHANNEL: usize = 256;

/// The region's runtime canary.
#[derive(Debug)]
pub struct RuntimeCanary {
    store: Store,
    policy: Mutex<Canary<FunctionKey>>,
    /// Decided verdicts as POPs apply them, to every push stream.
    announced: broadcast::Sender<ReleaseHint>,
}

/// The release POPs run a function with `verdict` on; `None` while undecided (the
/// current release, sampled only at the region).
fn release_of(verdict: Verdict) -> Option<Release> {
    origin::decided(verdict, None).map(Release::from)
}

/// The canary side of the release called `name`, if this node knows it.
pub fn side_of(name: &str) -> Option<Side> {
    Release::from_name(name).map(Side::from)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn store_key(key: &FunctionKey) -> String {
    format!("{}/{}", key.tenant, key.name)
}

impl RuntimeCanary {
    /// The canary over `store` with `cfg`, restoring the verdicts decided before.
    ///
    /// # Errors
    /// [`StoreError`] when the verdicts cannot be read. Unreadable records are skipped
    /// with a warning (the function is canaried again).
    pub fn open(store: Store, cfg: CanaryConfig) -> Result<Self, StoreError> {
        let mut policy = Canary::new(cfg);
        for (key, entry) in store.list(Bucket::Canary, "")? {
            let parsed = key.split_once('/').and_then(|(t, n)| {
                let fkey = FunctionKey {
                    tenant: TenantId::new(t).ok()?,
                    name: FunctionName::new(n).ok()?,
                };
                let record: VerdictRecord = serde_json::from_slice(&entry.value).ok()?;
                Some((fkey, record.verdict))
            });
            match parsed {
                Some((fkey, verdict)) => policy.restore(fkey, verdict),
                None => warn!(%key, "unreadable canary verdict skipped"),
            }
        }
        Ok(Self {
            store,
            policy: Mutex::new(policy),
            announced: broadcast::channel(RELEASE_CHANNEL).0,
        })
    }

    /// A receiver of every verdict decided from now on (one per push stream). Bounded: a
    /// receiver more than a few hundred verdicts behind gets `Lagged` and must resend
    /// [`RuntimeCanary::releases`].
    pub fn subscribe(&self) -> broadcast::Receiver<ReleaseHint> {
        self.announced.subscribe()
    }

    /// The release of every decided function, as POPs apply it (memory only, no I/O).
    /// Undecided functions are not listed: they run on the current release at POPs.
    pub fn releases(&self) -> Vec<ReleaseHint> {
        let policy = self.policy();
        let mut out: Vec<ReleaseHint> = policy
            .keys()
            .filter_map(|k| {
                let release = release_of(policy.verdict(k))?;
                Some(ReleaseHint {
                    function: k.clone(),
                    release: release.name().into(),
                })
            })
            .collect();
        // `keys` may list a function twice (verdict and counts).
        out.sort_by(|a, b| a.function.cmp(&b.function));
        out.dedup_by(|a, b| a.function == b.function);
        out
    }

    /// Share of an undecided function's invocations run on the next release, in percent.
    pub fn percent(&self) -> u8 {
        self.policy().config().percent
    }

    fn policy(&self) -> std::sync::MutexGuard<'_, Canary<FunctionKey>> {
        // Every update leaves the counts consistent, so a panic elsewhere cannot
        // corrupt them.
        self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the canary's counts and verdicts (for the origin planner, which
    /// chooses each invocation's release from them: `common::policy::origin`).
    pub fn with_policy<R>(&self, f: impl FnOnce(&Canary<FunctionKey>) -> R) -> R {
        f(&self.policy())
    }

    /// The release POPs run `key` on (`common::policy::origin::decided`): a known
    /// `pinned_to` release (its `runtime` config) wins; otherwise the next release once
    /// promoted, else the current one (an undecided function is sampled only here, from
    /// the region's own and forwarded traffic).
    ///
    /// `None` while undecided: a POP then samples the function itself with the same share
    /// and draw (see `Message::Releases::canary_percent`) and reports the outcomes.
    pub fn decided(&self, key: &FunctionKey, pinned_to: Option<&str>) -> Option<Release> {
        let pin = origin::pinned(pinned_to, side_of);
        origin::decided(self.policy().verdict(key), pin).map(Release::from)
    }

    /// Counts one outcome in memory (no I/O: called on the invoke path); returns the
    /// verdict when this outcome decided it, which the caller then [`persist`]s.
    ///
    /// [`persist`]: RuntimeCanary::persist
    pub fn record(
        &self,
        key: &FunctionKey,
        release: Release,
        failed: bool,
    ) -> Option<VerdictRecord> {
        self.record_many(key, release, 1, u32::from(failed))
    }

    /// Counts `n` outcomes on `release`, `failures` of them platform failures (what a POP
    /// reported for a function it sampled), as [`Self::record`] counts one.
    pub fn record_many(
        &self,
        key: &FunctionKey,
        release: Release,
        n: u32,
        failures: u32,
    ) -> Option<VerdictRecord> {
        let side = Side::from(release);
        let (verdict, counts) = {
            let mut policy = self.policy();
            let mut counts = policy.counts(key).unwrap_or_default();
            let verdict = policy.handle_outcomes(key, side, n, failures)?;
            // The policy drops the counts of a decided function; the record keeps them.
            match side {
                Side::Current => counts.add_current(n, failures),
                Side::Next => counts.add_next(n, failures),
            }
            (verdict, counts)
        };
        info!(function = %key, ?verdict, ?counts, "runtime canary verdict");
        Some(VerdictRecord::new(&key.name, verdict, counts, unix_ms()))
    }

    /// Stores `record`, the verdict of `key` (blocking: a store write), then announces it
    /// to POPs. A verdict that cannot be stored stays in force in memory (and is logged,
    /// and announced): it is decided again after a restart.
    pub fn persist(&self, key: &FunctionKey, record: &VerdictRecord) {
        let stored = serde_json::to_vec(record)
            .map_err(|e| StoreError::Backend(e.to_string()))
            .and_then(|bytes| {
                self.store
                    .put(Bucket::Canary, &store_key(key), &bytes, Expect::Any)
            });
        if let Err(e) = stored {
            warn!(function = %key, error = %e, "canary verdict not stored");
        }
        if let Some(release) = release_of(record.verdict) {
            // No receiver (no POP subscribed) is not an error: a POP that subscribes later
            // gets the verdict with the whole state.
            let _ = self.announced.send(ReleaseHint {
                function: key.clone(),
                release: release.name().into(),
            });
        }
    }

    /// `tenant`'s functions with a verdict or counts, by name (blocking: reads the
    /// stored records of decided ones, outside the policy's lock).
    pub fn verdicts(&self, tenant: &TenantId) -> Vec<VerdictRecord> {
        let listed: Vec<(FunctionKey, Verdict, Counts)> = {
            let policy = self.policy();
            policy
                .keys()
                .filter(|k| &k.tenant == tenant)
                .map(|k| {
                    (
                        k.clone(),
                        policy.verdict(k),
                        policy.counts(k).unwrap_or_default(),
                    )
                })
                .collect()
        };
        let mut out: Vec<VerdictRecord> = listed
            .into_iter()
            .map(|(k, verdict, counts)| {
                let stored = (verdict != Verdict::Undecided)
                    .then(|| {
                        self.store
                            .get(Bucket::Canary, &store_key(&k))
                            .ok()
                            .flatten()
                    })
                    .flatten()
                    .and_then(|e| serde_json::from_slice::<VerdictRecord>(&e.value).ok());
                stored.unwrap_or_else(|| VerdictRecord::new(&k.name, verdict, counts, 0))
            })
            .collect();
        out.sort_by(|a, b| a.function.cmp(&b.function));
        out.dedup_by(|a, b| a.function == b.function);
        out
    }

    /// `tenant`'s notifications: one per function pinned to the current release.
    pub fn notifications(&self, tenant: &TenantId) -> Vec<Notification> {
        self.verdicts(tenant)
            .into_iter()
            .filter(|v| v.verdict == Verdict::Pinned)
            .map(notification)
            .collect()
    }

    /// The operators' summary across tenants (memory only, no store reads): verdict
    /// counts and at most `max_listed` pinned functions, by name.
    pub fn summary(&self, max_listed: usize) -> RuntimeSummary {
        let policy = self.policy();
        let mut out = RuntimeSummary {
            current: Release::Current.name().into(),
            next: Release::Next.name().into(),
            canary_percent: policy.config().percent,
            ..RuntimeSummary::default()
        };
        for k in policy.keys() {
            match policy.verdict(k) {
                Verdict::Pinned => {
                    out.pinned += 1;
                    out.pinned_functions.push(k.to_string());
                }
                Verdict::Promoted => out.promoted += 1,
                Verdict::Undecided => out.undecided += 1,
            }
        }
        out.pinned_functions.sort();
        out.pinned_functions.truncate(max_listed);
        out
    }
}

/// The runtime canary at a glance, for the operators' capacity view and dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeSummary {
    /// The current release's name.
    pub current: String,
    /// The next release's name.
    pub next: String,
    /// Share of undecided functions' invocations on the next release, in percent.
    pub canary_percent: u8,
    /// Functions pinned to the current release.
    pub pinned: u64,
    /// Functions promoted to the next release.
    pub promoted: u64,
    /// Functions still sampled.
    pub undecided: u64,
    /// Pinned functions as `tenant/name`, sorted, at most a few dozen.
    pub pinned_functions: Vec<String>,
}

/// The owner's notification of a pinned verdict.
pub fn notification(v: VerdictRecord) -> Notification {
    Notification {
        kind: "runtime_incompatible".into(),
        function: v.function.clone(),
        message: format!(
            "{} failed on runtime {} in {} of {} canary invocations (vs {} of {} on {}); \
             it stays pinned to runtime {}",
            v.function,
            v.next,
            v.next_failures,
            v.next_invocations,
            v.current_failures,
            v.current_invocations,
            v.current,
            v.current
        ),
        at_ms: v.decided_at_ms,
        verdict: Some(v),
        alias: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, name: &str) -> FunctionKey {
        FunctionKey {
            tenant: TenantId::new(tenant).expect("tenant"),
            name: FunctionName::new(name).expect("name"),
        }
    }

    #[test]
    fn verdicts_survive_a_restart_and_stay_per_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let cfg = CanaryConfig {
            percent: 50,
            min_samples: 3,
            ..CanaryConfig::default()
        };
        let f = key("acme", "legacy");
        {
            let canary =
                RuntimeCanary::open(Store::open(&path).expect("store"), cfg).expect("canary");
            let mut decided = None;
            for _ in 0..3 {
                canary.record(&f, Release::Current, false);
                decided = decided.or(canary.record(&f, Release::Next, true));
                if let Some(record) = &decided {
                    canary.persist(&f, record);
                }
            }
            let record = decided.expect("decided");
            assert_eq!(record.verdict, Verdict::Pinned);
            assert_eq!((record.next_invocations, record.next_failures), (3, 3));
        }
        let canary = RuntimeCanary::open(Store::open(&path).expect("store"), cfg).expect("canary");
        let choose = |pin| canary.with_policy(|p| origin::release(p, &f, pin, 0));
        assert_eq!(choose(None), (Side::Current, false));
        let notes = canary.notifications(&f.tenant);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].kind, "runtime_incompatible");
        assert!(
            canary
                .notifications(&TenantId::new("other").expect("t"))
                .is_empty()
        );
        // A config pin wins and is not counted.
        let pin = origin::pinned(Some(Release::Next.name()), side_of);
        assert_eq!(choose(pin), (Side::Next, false));
        assert_eq!(canary.decided(&f, Some("2026.11")), Some(Release::Next));
    }
}
