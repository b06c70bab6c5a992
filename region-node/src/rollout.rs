//! Automatic rollback of gradual alias rollouts at a region: the node side of
//! `common::policy::rollout`.
//!
//! Every alias set with `auto_rollback` and two versions gets a [`RolloutJudge`] (fresh
//! counts on every move of the alias; read back from the registry at start-up, so a
//! restart samples again). Outcomes of either version are counted from the region's own
//! runs and from the POPs' load reports (`VersionOutcomes`), in memory, on the invoke
//! path. When a judge decides the newer version is worse, [`Rollouts::roll_back`] stores
//! the alias at 100% of the older version with the [`Rollback`] record (a registry write,
//! so POPs get the new routing on the push stream like any alias move); the record is the
//! owner's notification (`GET /v1/notifications`, kind `rollback`) and the dashboard's.
//!
//! Judges live in this region's memory: with regions sharing a store, each judges the
//! aliases set through it (and all of them after a restart) on the traffic it sees.

use crate::canary::Notification;
use crate::registry::Registry;
use common::model::{Alias, AliasName, ApiError, FunctionKey, FunctionName, Rollback, TenantId};
use common::policy::canary::{CanaryConfig, Verdict};
use common::policy::rollout::{Rollout, RolloutJudge};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{info, warn};

/// A rollout decided against its newer version, to be stored by [`Rollouts::roll_back`].
#[derive(Debug, Clone)]
pub struct Decided {
    /// The function.
    pub key: FunctionKey,
    /// Its alias.
    pub alias: AliasName,
    /// What to store.
    pub rollback: Rollback,
}

/// Judges per function: `(alias, routing judged, judge)`.
type Judges = HashMap<FunctionKey, Vec<(AliasName, common::model::AliasRouting, RolloutJudge)>>;

/// The region's rollout judges.
#[derive(Debug)]
pub struct Rollouts {
    registry: Arc<Registry>,
    cfg: CanaryConfig,
    judges: Mutex<Judges>,
    /// The latest rollbacks applied by this region, newest last, at most [`RECENT`].
    recent: Mutex<VecDeque<RolledBack>>,
}

/// Rollbacks kept for the dashboard (the durable record is the alias's).
const RECENT: usize = 50;

/// A rollback as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolledBack {
    /// `tenant/function:alias`.
    pub alias: String,
    /// The version rolled back to.
    pub to: u32,
    /// The version rolled back.
    pub new: u32,
    /// Failures of the newer version over its invocations while judged.
    pub new_failures: u32,
    /// Its invocations while judged.
    pub new_invocations: u32,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Rollouts at a glance, for the operators' capacity view and dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RolloutSummary {
    /// Aliases with `auto_rollback` being judged now.
    pub judged: u64,
    /// Some of them, `tenant/function:alias`, sorted.
    pub judged_aliases: Vec<String>,
    /// The latest rollbacks this region applied since it started, newest first.
    pub rolled_back: Vec<RolledBack>,
}

impl Rollouts {
    /// Judges for every alias with `auto_rollback` and two versions in `registry`, with
    /// the runtime canary's sample sizes and threshold `cfg` (its `max_tracked` bounds
    /// the functions judged at once).
    ///
    /// # Errors
    /// A store failure while listing the aliases.
    pub fn open(registry: Arc<Registry>, cfg: CanaryConfig) -> Result<Self, ApiError> {
        let this = Self {
            registry,
            cfg,
            judges: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
        };
        for (tenant, alias) in this.registry.all_aliases()? {
            this.watch(&tenant, &alias);
        }
        Ok(this)
    }

    fn judges(&self) -> std::sync::MutexGuard<'_, Judges> {
        // Every update is one insert or count; a panic elsewhere cannot corrupt them.
        self.judges.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts judging `alias` of `tenant` afresh as it routes now, or stops when it has
    /// one version or no `auto_rollback` (after every set).
    pub fn watch(&self, tenant: &TenantId, alias: &Alias) {
        let key = FunctionKey {
            tenant: tenant.clone(),
            name: alias.function.clone(),
        };
        let mut judges = self.judges();
        let tracked = judges.len();
        let list = judges.entry(key.clone()).or_default();
        list.retain(|(a, ..)| a != &alias.name);
        let rollout = Rollout::of(&alias.routing).filter(|_| alias.auto_rollback);
        if let Some(rollout) = rollout
            && (tracked < self.cfg.max_tracked || !list.is_empty())
        {
            list.push((
                alias.name.clone(),
                alias.routing.clone(),
                RolloutJudge::new(rollout),
            ));
        }
        if list.is_empty() {
            judges.remove(&key);
        }
    }

    /// Stops judging `alias` (deleted).
    pub fn forget(&self, tenant: &TenantId, function: &FunctionName, alias: &AliasName) {
        let key = FunctionKey {
            tenant: tenant.clone(),
            name: function.clone(),
        };
        let mut judges = self.judges();
        if let Some(list) = judges.get_mut(&key) {
            list.retain(|(a, ..)| a != alias);
            if list.is_empty() {
                judges.remove(&key);
            }
        }
    }

    /// Counts `n` outcomes of `version` of `key`, `errors` of them function errors (memory
    /// only, no I/O); returns the rollouts this decided against their newer version, for
    /// [`Self::roll_back`]. A decided judge stops (a kept rollout is not judged again until
    /// the alias moves).
    pub fn record(&self, key: &FunctionKey, version: &str, n: u32, errors: u32) -> Vec<Decided> {
        let Ok(version) = version.parse::<NonZeroU32>() else {
            return Vec::new();
        };
        let mut judges = self.judges();
        let Some(list) = judges.get_mut(key) else {
            return Vec::new();
        };
        let mut decided = Vec::new();
        list.retain_mut(|(alias, routing, judge)| {
            match judge.handle_outcomes(&self.cfg, version, n, errors) {
                None => true,
                Some(Verdict::Pinned) => {
                    let (r, c) = (judge.rollout(), judge.counts());
                    decided.push(Decided {
                        key: key.clone(),
                        alias: alias.clone(),
                        rollback: Rollback {
                            from: routing.clone(),
                            to: r.old,
                            new: r.new,
                            old_invocations: c.current,
                            old_failures: c.current_failures,
                            new_invocations: c.next,
                            new_failures: c.next_failures,
                            at_ms: common::logs::now_ms(),
                        },
                    });
                    false
                }
                Some(_) => {
                    info!(function = %key, %alias, "rollout judged no worse; kept");
                    false
                }
            }
        });
        if list.is_empty() {
            judges.remove(key);
        }
        decided
    }

    /// Stores `d` (blocking: a registry write); `None` when the alias moved or went since
    /// (the owner's change wins).
    ///
    /// # Errors
    /// A store failure: the rollback is not applied (and not judged again until the alias
    /// moves or the region restarts).
    pub fn roll_back(&self, d: &Decided) -> Result<Option<Alias>, ApiError> {
        let rolled = self.registry.roll_back_alias(
            &d.key.tenant,
            &d.key.name,
            &d.alias,
            d.rollback.clone(),
        )?;
        let Some(alias) = rolled else {
            info!(function = %d.key, alias = %d.alias, "rollout moved before its rollback");
            return Ok(None);
        };
        warn!(function = %d.key, alias = %d.alias, rollback = ?d.rollback,
            "rolled back a failing rollout");
        let r = &d.rollback;
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(RolledBack {
            alias: format!("{}:{}", d.key, d.alias),
            to: r.to.get(),
            new: r.new.get(),
            new_failures: r.new_failures,
            new_invocations: r.new_invocations,
            at_ms: r.at_ms,
        });
        Ok(Some(alias))
    }

    /// `tenant`'s aliases an automatic rollback set (blocking: a store read).
    ///
    /// # Errors
    /// A store failure.
    pub fn rolled_back(&self, tenant: &TenantId) -> Result<Vec<Alias>, ApiError> {
        self.registry.rolled_back_aliases(tenant)
    }

    /// The rollouts judged now (at most `max_listed` named) and the latest rollbacks
    /// (memory only, no store reads).
    pub fn summary(&self, max_listed: usize) -> RolloutSummary {
        let mut judged_aliases: Vec<String> = self
            .judges()
            .iter()
            .flat_map(|(k, list)| list.iter().map(move |(a, ..)| format!("{k}:{a}")))
            .collect();
        let judged = judged_aliases.len() as u64;
        judged_aliases.sort();
        judged_aliases.truncate(max_listed);
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        RolloutSummary {
            judged,
            judged_aliases,
            rolled_back: recent.iter().rev().cloned().collect(),
        }
    }
}

/// The owner's notification of `alias`, rolled back automatically.
pub fn notification(alias: Alias) -> Notification {
    let (message, at_ms) = match &alias.rolled_back {
        Some(r) => (
            format!(
                "alias {} of {}: version {} failed in {} of {} invocations (vs {} of {} on \
                 version {}); rolled back to version {}",
                alias.name,
                alias.function,
                r.new,
                r.new_failures,
                r.new_invocations,
                r.old_failures,
                r.old_invocations,
                r.to,
                r.to
            ),
            r.at_ms,
        ),
        None => (
            format!("alias {} of {} was rolled back", alias.name, alias.function),
            0,
        ),
    };
    Notification {
        kind: "rollback".into(),
        function: alias.function.to_string(),
        message,
        at_ms,
        verdict: None,
        alias: Some(alias),
    }
}
