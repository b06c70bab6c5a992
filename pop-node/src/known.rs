//! What the POP has learned from its region's replies: which tenant a token belongs to
//! and what each function's `$LATEST` is. Entries are trusted for a TTL; after it, the
//! next request is forwarded, which refreshes them. Bounded: when full, expired entries
//! are dropped first, then arbitrary ones.

use common::model::{FunctionKey, ResolvedFunction, TenantId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    tokens: HashMap<String, (TenantId, Instant)>,
    // Shared, so the hot path hands out a pointer instead of cloning config and env.
    functions: HashMap<FunctionKey, (Arc<ResolvedFunction>, Instant)>,
}

/// Learned tokens and functions with a TTL.
#[derive(Debug)]
pub struct Known {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
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

impl Known {
    /// A table trusting entries for `ttl`, holding at most `max_entries` of each kind.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent (each
        // operation is a single insert/remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant of `token`, if learned within the TTL.
    pub fn tenant(&self, token: &str, now: Instant) -> Option<TenantId> {
        let inner = self.lock();
        let (t, at) = inner.tokens.get(token)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| t.clone())
    }

    /// The `$LATEST` resolution of `key`, if learned within the TTL.
    pub fn function(&self, key: &FunctionKey, now: Instant) -> Option<Arc<ResolvedFunction>> {
        let inner = self.lock();
        let (f, at) = inner.functions.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| Arc::clone(f))
    }

    /// Records that `token` resolved `function` at `now`.
    pub fn learn(&self, token: &str, function: ResolvedFunction, now: Instant) {
        let mut inner = self.lock();
        bound(&mut inner.tokens, self.max_entries, now, self.ttl);
        inner
            .tokens
            .insert(token.to_owned(), (function.key.tenant.clone(), now));
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
        self.lock().tokens.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::model::{ArtifactDigest, FunctionConfig, FunctionName};

    fn resolved(rev: u64) -> ResolvedFunction {
        ResolvedFunction {
            key: FunctionKey {
                tenant: TenantId::new("t").expect("valid"),
                name: FunctionName::new("f").expect("valid"),
            },
            version: "$LATEST".into(),
            digest: ArtifactDigest::of(&rev.to_be_bytes()),
            config: FunctionConfig::default(),
            revision: rev,
        }
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let k = Known::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        k.learn("tok", resolved(1), t0);
        let key = resolved(1).key;
        assert!(k.tenant("tok", t0 + Duration::from_secs(9)).is_some());
        assert!(k.function(&key, t0 + Duration::from_secs(9)).is_some());
        assert!(k.tenant("tok", t0 + Duration::from_secs(10)).is_none());
        assert!(k.function(&key, t0 + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn an_older_resolution_never_replaces_a_newer_one() {
        let k = Known::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        k.learn("tok", resolved(5), t0);
        k.learn("tok", resolved(3), t0);
        assert_eq!(
            k.function(&resolved(5).key, t0).map(|f| f.revision),
            Some(5)
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let k = Known::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        for i in 0..50 {
            k.learn(&format!("tok{i}"), resolved(1), t0);
        }
        assert!(k.lock().tokens.len() <= 3);
    }
}
