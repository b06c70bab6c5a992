use super::*;
use crate::store::Store;
use common::model::{Qualifier, RouteSpec};

fn setup() -> (tempfile::TempDir, Registry, TenantId, FunctionName) {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Registry::new(Store::open(&dir.path().join("r.redb")).expect("opens"));
    let t = TenantId::new("a").expect("valid");
    r.create_tenant(t.clone(), 512).expect("tenant");
    let f = FunctionName::new("f").expect("valid");
    r.deploy(&t, &f, FunctionConfig::default(), b"one", None)
        .expect("deploy");
    (dir, r, t, f)
}

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

#[test]
fn publish_numbers_versions_and_is_idempotent_for_an_unchanged_latest() {
    let (_d, r, t, f) = setup();
    let (v1, created) = r.publish(&t, &f, None).expect("publish");
    assert_eq!((v1.version.get(), created), (1, true));
    let (again, created) = r.publish(&t, &f, None).expect("publish");
    assert_eq!((again.version.get(), created), (1, false));
    r.deploy(&t, &f, FunctionConfig::default(), b"two", None)
        .expect("deploy");
    let (v2, _) = r.publish(&t, &f, Some("second".into())).expect("publish");
    assert_eq!(v2.version.get(), 2);
    assert_eq!(v2.digest, ArtifactDigest::of(b"two"));
    // Deleting the newest never lets its number come back.
    r.delete_version(&t, &f, n(2)).expect("delete");
    r.deploy(&t, &f, FunctionConfig::default(), b"three", None)
        .expect("deploy");
    assert_eq!(r.publish(&t, &f, None).expect("publish").0.version.get(), 3);
    let listed: Vec<u32> = r
        .versions(&t, &f)
        .expect("list")
        .iter()
        .map(|v| v.version.get())
        .collect();
    assert_eq!(listed, [1, 3]);
}

#[test]
fn aliases_resolve_by_weight_and_pin_their_versions() {
    let (_d, r, t, f) = setup();
    r.publish(&t, &f, None).expect("v1");
    r.deploy(&t, &f, FunctionConfig::default(), b"two", None)
        .expect("deploy");
    r.publish(&t, &f, None).expect("v2");
    let routing = AliasRouting::new(vec![
        RouteSpec {
            version: n(1),
            weight: Some(90),
        },
        RouteSpec {
            version: n(2),
            weight: Some(10),
        },
    ])
    .expect("valid");
    let prod = AliasName::new("prod").expect("valid");
    r.set_alias(&t, &f, prod.clone(), routing, false)
        .expect("alias");
    let q = Qualifier::Alias("prod".into());
    assert_eq!(r.resolve(&t, &f, &q, 5).expect("resolves").version, "1");
    assert_eq!(r.resolve(&t, &f, &q, 95).expect("resolves").version, "2");
    let err = r.delete_version(&t, &f, n(2)).expect_err("pinned");
    assert_eq!(err.kind, ErrorKind::Conflict);
    let missing = AliasRouting::single(n(9));
    let err = r
        .set_alias(&t, &f, prod.clone(), missing, false)
        .expect_err("missing version");
    assert_eq!(err.kind, ErrorKind::BadRequest);
    r.delete_alias(&t, &f, &prod).expect("delete alias");
    r.delete_version(&t, &f, n(2)).expect("now deletable");
    let gone = r
        .resolve(&t, &f, &Qualifier::Version(n(2)), 0)
        .expect_err("deleted");
    assert!(matches!(gone, super::LookupError::Version { version, .. } if version == n(2)));
    assert_eq!(ApiError::from(gone).kind, ErrorKind::NotFound);
}

#[test]
fn deleting_a_function_removes_its_versions_and_aliases() {
    let (_d, r, t, f) = setup();
    r.publish(&t, &f, None).expect("v1");
    r.set_alias(
        &t,
        &f,
        AliasName::new("prod").expect("valid"),
        AliasRouting::single(n(1)),
        false,
    )
    .expect("alias");
    r.delete_function(&t, &f).expect("delete");
    r.deploy(&t, &f, FunctionConfig::default(), b"again", None)
        .expect("redeploy");
    assert!(r.versions(&t, &f).expect("list").is_empty());
    assert!(r.aliases(&t, &f).expect("list").is_empty());
    assert_eq!(r.publish(&t, &f, None).expect("publish").0.version.get(), 1);
}

#[test]
fn a_rollback_applies_only_to_the_routing_it_judged() {
    let (_d, r, t, f) = setup();
    r.publish(&t, &f, None).expect("v1");
    r.deploy(&t, &f, FunctionConfig::default(), b"two", None)
        .expect("deploy");
    r.publish(&t, &f, None).expect("v2");
    let prod = AliasName::new("prod").expect("valid");
    let spec = |v, w| RouteSpec {
        version: n(v),
        weight: Some(w),
    };
    let split = |w| AliasRouting::new(vec![spec(1, 100 - w), spec(2, w)]).expect("valid");
    r.set_alias(&t, &f, prod.clone(), split(50), true)
        .expect("set");
    let rollback = |from| Rollback {
        from,
        to: n(1),
        new: n(2),
        old_invocations: 30,
        old_failures: 0,
        new_invocations: 30,
        new_failures: 30,
        at_ms: 7,
    };
    // The owner moved the weights since the judge started: theirs stands.
    let stale = r.roll_back_alias(&t, &f, &prod, rollback(split(10)));
    assert!(stale.expect("stored").is_none());
    let a = r.roll_back_alias(&t, &f, &prod, rollback(split(50)));
    let a = a.expect("stored").expect("rolled back");
    assert_eq!(a.routing, AliasRouting::single(n(1)));
    assert!(a.auto_rollback);
    assert_eq!(r.rolled_back_aliases(&t).expect("list"), vec![a.clone()]);
    assert_eq!(r.all_aliases().expect("all"), vec![(t.clone(), a)]);
}
