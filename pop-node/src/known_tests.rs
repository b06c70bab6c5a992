//! Tests of [`Known`](super::Known): learned and pushed state, dynamic deployment and
//! runtime release hints.

use super::*;
use common::model::{FunctionConfig, FunctionName};

fn key() -> FunctionKey {
    FunctionKey {
        tenant: TenantId::new("t").expect("valid"),
        name: FunctionName::new("f").expect("valid"),
    }
}

fn resolved(rev: u64) -> ResolvedFunction {
    ResolvedFunction {
        key: key(),
        version: "$LATEST".into(),
        digest: ArtifactDigest::of(&rev.to_be_bytes()),
        config: FunctionConfig::default(),
        revision: rev,
        release: None,
    }
}

fn version(n: u32, rev: u64) -> (NonZeroU32, ResolvedFunction) {
    let v = NonZeroU32::new(n).expect("non-zero");
    let mut f = resolved(rev);
    f.version = v.to_string();
    (v, f)
}

#[test]
fn entries_expire_after_the_ttl() {
    let k = Known::new(Duration::from_secs(10), 10, Instant::now());
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
    let k = Known::new(Duration::from_secs(10), 10, Instant::now());
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
    let k = Known::new(Duration::from_secs(10), 3, Instant::now());
    let t0 = Instant::now();
    for i in 0..50 {
        k.learn(&format!("tok{i}"), resolved(1), t0);
    }
    assert!(k.read().tokens.len() <= 3);
}

/// A `Known` (10 s TTL) that has been pushed `token` of tenant `t`, push stream not live.
fn known_with_pushed_token(token: &str) -> (Known, TenantId) {
    let k = Known::new(Duration::from_secs(10), 10, Instant::now());
    let tenant = TenantId::new("t").expect("valid");
    k.apply(
        Update::Token {
            hash: TokenHash::of(token),
            tenant: Some(tenant.clone()),
            expires_at_ms: None,
        },
        |_| false,
    );
    (k, tenant)
}

#[test]
fn pushed_tokens_authenticate_by_hash_while_the_stream_is_trusted() {
    let (k, tenant) = known_with_pushed_token("st_secret");
    let t0 = Instant::now();
    assert_eq!(k.tenant("st_secret", t0), None, "not live yet");
    k.set_push_live(true, t0);
    assert_eq!(k.tenant("st_secret", t0), Some(tenant));
    assert_eq!(k.tenant("st_other", t0), None);
    k.set_push_live(false, t0);
    assert!(k.tenant("st_secret", t0 + Duration::from_secs(9)).is_some());
    assert!(
        k.tenant("st_secret", t0 + Duration::from_secs(10))
            .is_none()
    );
}

#[test]
fn a_tokens_standing_names_its_tenant_or_says_whether_it_can_be_refused() {
    let (k, tenant) = known_with_pushed_token("st_secret");
    let t0 = Instant::now();
    // Before the push stream is live nothing can be ruled out.
    assert_eq!(k.token_standing("st_other", t0), Err(Standing::Unknown));
    k.set_push_live(true, t0);
    assert_eq!(k.token_standing("st_secret", t0), Ok(tenant));
    assert_eq!(k.token_standing("st_other", t0), Err(Standing::Refused));
}

#[test]
fn a_moved_latest_keeps_serving_the_prepared_one_until_the_new_one_is_ready() {
    let k = Known::new(Duration::from_secs(10), 10, Instant::now());
    let t0 = Instant::now();
    k.set_push_live(true, t0);
    let (old, new) = (resolved(1), resolved(2));
    let old_digest = old.digest;
    let ready_old = |d: &ArtifactDigest| *d == old_digest;
    k.apply(
        Update::Function {
            key: key(),
            latest: Some(old),
        },
        ready_old,
    );
    let prepare = k.apply(
        Update::Function {
            key: key(),
            latest: Some(new.clone()),
        },
        ready_old,
    );
    assert_eq!(prepare, [new.digest]);
    let r = k
        .resolve(&key(), &Qualifier::Latest, 0, t0, ready_old)
        .expect("known");
    assert_eq!((r.function.revision, r.prepare), (1, Some(new.digest)));
    let r = k
        .resolve(&key(), &Qualifier::Latest, 0, t0, |_| true)
        .expect("known");
    assert_eq!((r.function.revision, r.prepare), (2, None));
}

#[test]
fn release_hints_stamp_pushed_functions_before_and_after_they_arrive() {
    let k = Known::new(Duration::from_secs(10), 10, Instant::now());
    let t0 = Instant::now();
    k.set_push_live(true, t0);
    let hint = |release: &str| ReleaseHint {
        function: key(),
        release: release.into(),
    };
    let release = || {
        k.resolve(&key(), &Qualifier::Latest, 0, t0, |_| true)
            .expect("known")
            .function
            .release
            .clone()
    };
    // A hint before the function is pushed applies when it arrives.
    assert!(
        k.apply_releases(true, vec![hint("2026.11")], |_| true)
            .is_empty()
    );
    let f = resolved(1);
    let digest = f.digest;
    k.apply(
        Update::Function {
            key: key(),
            latest: Some(f),
        },
        |_| true,
    );
    assert_eq!(release().as_deref(), Some("2026.11"));
    // A change reaches what is already pushed; the prepared code is returned so the
    // caller can compile it for the hinted release.
    let prepare = k.apply_releases(false, vec![hint("2026.10")], |_| true);
    assert_eq!(prepare, [(digest, "2026.10".to_owned())]);
    assert_eq!(release().as_deref(), Some("2026.10"));
    assert!(
        k.apply_releases(false, vec![hint("2026.11")], |_| false)
            .is_empty()
    );
    // A full state without the function forgets its hint: current release.
    k.apply_releases(true, Vec::new(), |_| true);
    assert_eq!(release(), None);
    // The function's own `runtime` pin wins over a hint.
    let mut pinned = resolved(2);
    pinned.config.runtime = Some("2026.10".into());
    k.apply(
        Update::Function {
            key: key(),
            latest: Some(pinned),
        },
        |_| true,
    );
    k.apply_releases(false, vec![hint("2026.11")], |_| true);
    assert_eq!(release(), None);
}

#[test]
fn release_hints_are_bounded() {
    let k = Known::new(Duration::from_secs(10), 3, Instant::now());
    let hints = (0..50)
        .map(|i| ReleaseHint {
            function: FunctionKey {
                tenant: TenantId::new("t").expect("valid"),
                name: FunctionName::new(format!("f{i}")).expect("valid"),
            },
            release: "2026.11".into(),
        })
        .collect();
    k.apply_releases(false, hints, |_| true);
    assert_eq!(k.read().releases.len(), 3);
}

#[test]
fn explicit_versions_and_weighted_aliases_resolve_from_pushed_state() {
    let k = Known::new(Duration::from_secs(10), 10, Instant::now());
    let t0 = Instant::now();
    k.set_push_live(true, t0);
    for (n, f) in [version(1, 1), version(2, 2)] {
        k.apply(
            Update::Version {
                key: key(),
                version: n,
                function: Some(f),
            },
            |_| true,
        );
    }
    let two = NonZeroU32::new(2).expect("non-zero");
    let r = k
        .resolve(&key(), &Qualifier::Version(two), 0, t0, |_| false)
        .expect("known");
    assert_eq!((r.function.version.as_str(), r.prepare), ("2", None));
    let routing = AliasRouting::new(vec![
        common::model::RouteSpec {
            version: NonZeroU32::MIN,
            weight: Some(90),
        },
        common::model::RouteSpec {
            version: two,
            weight: Some(10),
        },
    ])
    .expect("valid");
    k.apply(
        Update::Alias {
            key: key(),
            alias: AliasName::new("prod").expect("valid"),
            routing: Some(routing),
        },
        |_| true,
    );
    let q = Qualifier::Alias("prod".into());
    let pick = |draw| {
        k.resolve(&key(), &q, draw, t0, |_| true)
            .expect("known")
            .function
            .version
            .clone()
    };
    assert_eq!((pick(10).as_str(), pick(95).as_str()), ("1", "2"));
}

#[test]
fn a_pushed_revocation_forgets_a_learned_token_and_expiry_is_refused() {
    let k = Known::new(Duration::from_secs(10), 10, Instant::now());
    let t0 = Instant::now();
    k.set_push_live(true, t0);
    k.learn("st_learned", resolved(1), t0);
    assert!(
        k.tenant("st_learned", t0).is_some(),
        "learned from a forward"
    );
    k.apply(
        Update::Token {
            hash: TokenHash::of("st_learned"),
            tenant: None,
            expires_at_ms: None,
        },
        |_| false,
    );
    assert_eq!(k.tenant("st_learned", t0), None, "revoked at once");
    let tenant = TenantId::new("t").expect("valid");
    k.apply(
        Update::Token {
            hash: TokenHash::of("st_expiring"),
            tenant: Some(tenant.clone()),
            expires_at_ms: Some(1_000),
        },
        |_| false,
    );
    k.learn("st_expiring", resolved(1), t0);
    assert_eq!(k.tenant_at("st_expiring", t0, 999), Some(tenant));
    assert_eq!(
        k.tenant_at("st_expiring", t0, 1_000),
        None,
        "expired, though also learned"
    );
}
