//! What the POP knows about tenants and functions, from two sources:
//!
//! - **pushed** by the region over the push stream ([`crate::sync`]): token hashes,
//!   `$LATEST`, published versions and aliases. Authoritative while the subscription is
//!   live, and for a TTL after it drops (then the POP forwards until it resubscribes).
//! - **learned** from forwarded replies (the fallback for a cold POP): a token's tenant and
//!   a function's `$LATEST`, each trusted for a TTL.
//!
//! Dynamic deployment lives here: when `$LATEST` or an alias moves, the state keeps what
//! it resolved to before (if that was prepared), and [`Known::resolve`] keeps answering
//! with it until the new artifact is ready, asking the caller to prepare the new one. An
//! explicit version always resolves to exactly that version.
//!
//! Runtime releases: the region also pushes which release each function its canary
//! decided runs on ([`Known::apply_releases`]); pushed resolutions carry that release in
//! [`ResolvedFunction::release`] (stamped when the hint or the function arrives, so the
//! hot path reads it for free). A function's own `runtime` config wins, as at the region.
//! Learned resolutions already carry the region's release from the forwarded reply.
//!
//! Bounded: at most `max_entries` tokens and functions of each source, and release hints.
//! Learned entries are evicted (expired first); a pushed function beyond the bound is not
//! kept, so it is served by forwarding; a release hint beyond the bound is not kept, so
//! that function runs on the current release here (the region still runs it on its own).

use common::model::{
    AliasName, AliasRouting, ArtifactDigest, FunctionKey, Qualifier, ResolvedFunction, TenantId,
    TokenHash,
};
use common::policy::version::{self, Previous, Target};
use common::wire::{ReleaseHint, Update};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A pushed alias: where it points now and, while that is being prepared, before.
#[derive(Debug, Clone)]
struct PushedAlias {
    routing: AliasRouting,
    previous: Option<AliasRouting>,
}

/// Everything pushed about one function.
#[derive(Debug, Default)]
struct PushedFunction {
    latest: Option<Arc<ResolvedFunction>>,
    /// The `$LATEST` before `latest`, kept only if it was prepared here.
    previous_latest: Option<Arc<ResolvedFunction>>,
    versions: BTreeMap<NonZeroU32, Arc<ResolvedFunction>>,
    aliases: HashMap<AliasName, PushedAlias>,
}

/// `f` as it runs with the region's release hint `hint`: its own `runtime` pin wins (the
/// invoker falls back to it when `release` is `None`), as the region's canary decides.
fn stamp(mut f: ResolvedFunction, hint: Option<&String>) -> ResolvedFunction {
    f.release = hint.filter(|_| f.config.runtime.is_none()).cloned();
    f
}

/// `f` stamped with `hint`, shared again when nothing changes.
fn restamp(f: &Arc<ResolvedFunction>, hint: Option<&String>) -> Arc<ResolvedFunction> {
    let wanted = hint.filter(|_| f.config.runtime.is_none());
    if f.release.as_ref() == wanted {
        return Arc::clone(f);
    }
    Arc::new(stamp(ResolvedFunction::clone(f), hint))
}

impl PushedFunction {
    /// Stamps every resolution of the function with `hint`.
    fn restamp(&mut self, hint: Option<&String>) {
        for f in [&mut self.latest, &mut self.previous_latest]
            .into_iter()
            .flatten()
        {
            *f = restamp(f, hint);
        }
        for f in self.versions.values_mut() {
            *f = restamp(f, hint);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    tokens: HashMap<TokenHash, (TenantId, Instant)>,
    // Shared, so the hot path hands out a pointer instead of cloning config and env.
    functions: HashMap<FunctionKey, (Arc<ResolvedFunction>, Instant)>,
    /// Pushed tokens: the tenant and the expiry (wall-clock milliseconds), if any.
    pushed_tokens: HashMap<TokenHash, (TenantId, Option<u64>)>,
    pushed: HashMap<FunctionKey, PushedFunction>,
    /// The region's release hints: the release each decided function runs on.
    releases: HashMap<FunctionKey, String>,
    /// `None` while the push stream is live; otherwise until when pushed state is trusted.
    pushed_until: Option<Instant>,
    /// A pushed token was not kept (the bound): the pushed set is no longer every token.
    tokens_truncated: bool,
}

/// What a function resolves to at this POP.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The function (version) to run.
    pub function: Arc<ResolvedFunction>,
    /// A newer artifact to prepare in the background: `function` is the previous
    /// resolution, served because this one is not ready yet.
    pub prepare: Option<ArtifactDigest>,
}

/// Why [`Known::token_standing`] found no tenant for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The token is certainly not valid (the live pushed set would hold it).
    Refused,
    /// This POP cannot tell (not pushed yet, or the stream is down); the region decides.
    Unknown,
}

/// Pushed and learned tokens and functions (see the module docs).
#[derive(Debug)]
pub struct Known {
    ttl: Duration,
    max_entries: usize,
    /// Read on every request, written when a push or a forward's reply teaches something.
    inner: RwLock<Inner>,
    /// The region canary's share on the next release, in percent (from its release
    /// hints; 0 until a region that canaries sends them).
    canary_percent: std::sync::atomic::AtomicU8,
}

fn bound<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, (V, Instant)>,
    max: usize,
    now: Instant,
    ttl: Duration,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
    while map.len() >= max {
        let Some(k) = map.keys().next().cloned() else {
            break;
        };
        map.remove(&k);
    }
}

impl Inner {
    fn pushed_trusted(&self, now: Instant) -> bool {
        self.pushed_until.is_none_or(|until| now < until)
    }
}

impl Known {
    /// A table created at `now`, trusting learned entries (and pushed ones after the push
    /// stream drops) for `ttl`, holding at most `max_entries` of each kind.
    pub fn new(ttl: Duration, max_entries: usize, now: Instant) -> Self {
        let inner = Inner {
            // Nothing pushed yet: trust nothing until the first subscription.
            pushed_until: Some(now),
            ..Inner::default()
        };
        Self {
            ttl,
            max_entries: max_entries.max(1),
            inner: RwLock::new(inner),
            canary_percent: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The region canary's share of an undecided function's invocations on the next
    /// release, in percent, as its release hints said last.
    pub fn canary_percent(&self) -> u8 {
        self.canary_percent
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Keeps the canary's share a release hint carried.
    pub fn set_canary_percent(&self, percent: u8) {
        self.canary_percent
            .store(percent.min(100), std::sync::atomic::Ordering::Release);
    }

    // A panic while holding this lock cannot leave the maps inconsistent (each operation
    // is a single insert/remove), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        common::sharded::read(&self.inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        common::sharded::write(&self.inner)
    }

    /// The tenant of `token`: pushed (by hash) or learned within the TTL. A pushed token
    /// past its expiry is refused, whatever was learned of it.
    pub fn tenant(&self, token: &str, now: Instant) -> Option<TenantId> {
        // The wall clock is read only for a token that expires.
        self.tenant_with(token, now, common::logs::now_ms)
    }

    /// [`Known::tenant`] with the wall clock (`wall_ms`, milliseconds since the Unix
    /// epoch) given, against which token expiry is judged.
    pub fn tenant_at(&self, token: &str, now: Instant, wall_ms: u64) -> Option<TenantId> {
        self.tenant_with(token, now, || wall_ms)
    }

    fn tenant_with(
        &self,
        token: &str,
        now: Instant,
        wall_ms: impl FnOnce() -> u64,
    ) -> Option<TenantId> {
        let hash = TokenHash::of(token);
        let inner = self.read();
        if inner.pushed_trusted(now)
            && let Some((t, expires_at_ms)) = inner.pushed_tokens.get(&hash)
        {
            if expires_at_ms.is_some_and(|at| at <= wall_ms()) {
                return None;
            }
            return Some(t.clone());
        }
        let (t, at) = inner.tokens.get(&hash)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| t.clone())
    }

    /// Whether `token` is valid as far as this POP can tell without asking the region:
    /// its tenant when it is known, [`Standing::Refused`] when it certainly is not (the
    /// push stream is live and the pushed set holds every token), [`Standing::Unknown`]
    /// when it cannot tell.
    ///
    /// # Errors
    /// The token is not known here: [`Standing`] says whether it can be refused.
    pub fn token_standing(&self, token: &str, now: Instant) -> Result<TenantId, Standing> {
        if let Some(tenant) = self.tenant(token, now) {
            return Ok(tenant);
        }
        let inner = self.read();
        Err(
            match inner.pushed_until.is_none() && !inner.tokens_truncated {
                true => Standing::Refused,
                false => Standing::Unknown,
            },
        )
    }

    /// The learned `$LATEST` resolution of `key`, if learned within the TTL.
    pub fn function(&self, key: &FunctionKey, now: Instant) -> Option<Arc<ResolvedFunction>> {
        let inner = self.read();
        let (f, at) = inner.functions.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| Arc::clone(f))
    }

    /// What `qualifier` of `key` runs here. `draw` picks between an alias's versions;
    /// `ready` says whether an artifact is prepared locally. `None` when the POP does not
    /// know (the caller forwards).
    pub fn resolve(
        &self,
        key: &FunctionKey,
        qualifier: &Qualifier,
        draw: u64,
        now: Instant,
        ready: impl Fn(&ArtifactDigest) -> bool,
    ) -> Option<Resolution> {
        let inner = self.read();
        let pushed = inner
            .pushed_trusted(now)
            .then(|| inner.pushed.get(key))
            .flatten();
        let Some(p) = pushed else {
            drop(inner);
            // Learned resolutions are `$LATEST` only.
            return (*qualifier == Qualifier::Latest)
                .then(|| self.function(key, now))
                .flatten()
                .map(|function| Resolution {
                    function,
                    prepare: None,
                });
        };
        let lookup = |a: &AliasName| {
            Ok::<_, Infallible>(p.aliases.get(a).map(|a| (&a.routing, a.previous.as_ref())))
        };
        let named = version::name(qualifier, draw, lookup).ok()??;
        let newest = match named.target {
            Target::Latest => p.latest.clone()?,
            // Exactly this version, prepared or not.
            Target::Version(n) => Arc::clone(p.versions.get(&n)?),
        };
        let previous = named.previous.and_then(|prev| match prev {
            Previous::Latest => p.previous_latest.clone(),
            Previous::Version(n) => p.versions.get(&n).cloned(),
        });
        let (function, prepare) = version::prefer_prepared(newest, previous, |f| ready(&f.digest));
        Some(Resolution {
            function,
            prepare: prepare.map(|f| f.digest),
        })
    }

    /// Records that `token` resolved `function` at `now`.
    pub fn learn(&self, token: &str, function: ResolvedFunction, now: Instant) {
        self.learn_hashed(TokenHash::of(token), function, now);
    }

    /// Records that the token with hash `token` resolved `function` at `now` (tokens are
    /// kept only as hashes, here and on disk).
    pub fn learn_hashed(&self, token: TokenHash, function: ResolvedFunction, now: Instant) {
        let mut inner = self.write();
        bound(&mut inner.tokens, self.max_entries, now, self.ttl);
        inner
            .tokens
            .insert(token, (function.key.tenant.clone(), now));
        if function.version == "$LATEST" {
            bound(&mut inner.functions, self.max_entries, now, self.ttl);
            let key = function.key.clone();
            // Never replace a newer resolution with an older one (replies can race).
            let newer = inner
                .functions
                .get(&key)
                .is_none_or(|(old, _)| old.revision <= function.revision);
            if newer {
                inner.functions.insert(key, (Arc::new(function), now));
            }
        }
    }

    /// Forgets `token` (the region refused it).
    pub fn forget_token(&self, token: &str) {
        let mut inner = self.write();
        let hash = TokenHash::of(token);
        inner.tokens.remove(&hash);
        inner.pushed_tokens.remove(&hash);
    }

    /// The push stream is live (`true`), or dropped at `now` (`false`): pushed state is
    /// then trusted for one TTL more.
    pub fn set_push_live(&self, live: bool, now: Instant) {
        let mut inner = self.write();
        inner.pushed_until = if live {
            None
        } else {
            Some(inner.pushed_until.unwrap_or(now + self.ttl))
        };
    }

    /// Forgets everything pushed (before applying a snapshot).
    pub fn clear_pushed(&self) {
        let mut inner = self.write();
        inner.pushed_tokens.clear();
        inner.tokens_truncated = false;
        inner.pushed.clear();
    }

    /// Applies the region's release hints (see the module docs); `full` first forgets
    /// every hint given before. `ready` says whether an artifact is prepared here: returns
    /// the `$LATEST` code of hinted functions that run here, with their release, so the
    /// caller can prepare it for that release before the next invocation needs it.
    pub fn apply_releases(
        &self,
        full: bool,
        hints: Vec<ReleaseHint>,
        ready: impl Fn(&ArtifactDigest) -> bool,
    ) -> Vec<(ArtifactDigest, String)> {
        let mut inner = self.write();
        let inner = &mut *inner;
        let mut changed: Vec<FunctionKey> = Vec::new();
        if full {
            changed.extend(std::mem::take(&mut inner.releases).into_keys());
        }
        for hint in hints {
            if inner.releases.len() >= self.max_entries
                && !inner.releases.contains_key(&hint.function)
            {
                continue;
            }
            inner.releases.insert(hint.function.clone(), hint.release);
            changed.push(hint.function);
        }
        changed.sort_unstable();
        changed.dedup();
        let mut prepare = Vec::new();
        for key in changed {
            let Some(f) = inner.pushed.get_mut(&key) else {
                continue;
            };
            let hint = inner.releases.get(&key);
            f.restamp(hint);
            if let (Some(latest), Some(release)) = (&f.latest, hint)
                && ready(&latest.digest)
            {
                prepare.push((latest.digest, release.clone()));
            }
        }
        prepare
    }

    /// Applies one pushed update; `ready` says whether an artifact is prepared here.
    /// Returns the digest to prepare in the background when a function or alias moved
    /// away from a prepared artifact to one that is not (the old one keeps serving).
    pub fn apply(
        &self,
        update: Update,
        ready: impl Fn(&ArtifactDigest) -> bool,
    ) -> Vec<ArtifactDigest> {
        let mut inner = self.write();
        let mut prepare = Vec::new();
        let full = inner.pushed.len() >= self.max_entries;
        match update {
            Update::Token {
                hash,
                tenant,
                expires_at_ms,
            } => match tenant {
                Some(t) if inner.pushed_tokens.len() < self.max_entries => {
                    inner.pushed_tokens.insert(hash, (t, expires_at_ms));
                }
                Some(_) => inner.tokens_truncated = true,
                // Revoked: forgotten whether pushed or learned from a forward.
                None => {
                    inner.pushed_tokens.remove(&hash);
                    inner.tokens.remove(&hash);
                }
            },
            Update::Function { key, latest } => {
                let Some(latest) = latest else {
                    inner.pushed.remove(&key);
                    inner.functions.remove(&key);
                    return prepare;
                };
                if full && !inner.pushed.contains_key(&key) {
                    return prepare;
                }
                let latest = Arc::new(stamp(latest, inner.releases.get(&key)));
                let f = inner.pushed.entry(key).or_default();
                // Keep serving a prepared previous `$LATEST` until the new one is ready.
                let keep = [f.latest.take(), f.previous_latest.take()]
                    .into_iter()
                    .flatten()
                    .find(|old| old.digest != latest.digest && ready(&old.digest));
                if keep.is_some() && !ready(&latest.digest) {
                    prepare.push(latest.digest);
                }
                f.previous_latest = keep;
                f.latest = Some(latest);
            }
            Update::Version {
                key,
                version,
                function,
            } => match function {
                Some(v) => {
                    if full && !inner.pushed.contains_key(&key) {
                        return prepare;
                    }
                    let v = Arc::new(stamp(v, inner.releases.get(&key)));
                    let f = inner.pushed.entry(key).or_default();
                    f.versions.insert(version, v);
                }
                None => {
                    if let Some(f) = inner.pushed.get_mut(&key) {
                        f.versions.remove(&version);
                    }
                }
            },
            // Certificates are the HTTPS listener's (`crate::https::TenantCerts`); the sync
            // task hands them there, not here.
            Update::Certificate { .. } => {}
            Update::Alias {
                key,
                alias,
                routing,
            } => match routing {
                Some(routing) => {
                    if full && !inner.pushed.contains_key(&key) {
                        return prepare;
                    }
                    let f = inner.pushed.entry(key).or_default();
                    let digest_of = |v: &NonZeroU32| f.versions.get(v).map(|r| r.digest);
                    let old = f.aliases.get(&alias);
                    let old_ready = old.is_some_and(|a| {
                        [Some(&a.routing), a.previous.as_ref()]
                            .into_iter()
                            .flatten()
                            .flat_map(|r| r.routes())
                            .filter_map(|r| digest_of(&r.version))
                            .any(|d| ready(&d))
                    });
                    if old_ready {
                        prepare.extend(
                            routing
                                .routes()
                                .iter()
                                .filter_map(|r| digest_of(&r.version))
                                .filter(|d| !ready(d)),
                        );
                    }
                    let previous = old.map(|a| a.routing.clone()).filter(|r| *r != routing);
                    f.aliases.insert(alias, PushedAlias { routing, previous });
                }
                None => {
                    if let Some(f) = inner.pushed.get_mut(&key) {
                        f.aliases.remove(&alias);
                    }
                }
            },
        }
        prepare
    }
}

#[cfg(test)]
#[path = "known_tests.rs"]
mod tests;
