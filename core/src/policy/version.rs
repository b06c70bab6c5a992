//! Version resolution, shared by both tiers: which version a qualifier names (`$LATEST`, a
//! version number, or the version an alias's routing draws), and which one runs while a
//! moved `$LATEST` or alias points at code not prepared yet.
//!
//! The region looks the named version up in its registry; the POP in what the region
//! pushed, and there it keeps running the previous version until the new one's module is
//! ready ([`prefer_prepared`]). Never performs I/O: the lookups are the caller's.

use super::alias;
use crate::model::{AliasName, AliasRouting, Qualifier};
use std::borrow::Borrow;
use std::num::NonZeroU32;

/// A version a qualifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `$LATEST`: the function's mutable head.
    Latest,
    /// One published version.
    Version(NonZeroU32),
}

/// What ran before the qualifier's target moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// The `$LATEST` before the current one.
    Latest,
    /// The version the alias's previous routing draws.
    Version(NonZeroU32),
}

/// What a qualifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    /// The version it names now.
    pub target: Target,
    /// What it named before it moved, for a tier that serves that while `target` is
    /// prepared (none for a version number: it never moves).
    pub previous: Option<Previous>,
}

/// The version `qualifier` names, an alias drawing between its versions with `draw` (the
/// affinity key's hash or the request id: [`alias::draw`]). `alias` looks an alias up: its
/// routing now and, if the caller keeps it, before. `Ok(None)` when the qualifier names an
/// alias that is not a valid name or does not exist.
///
/// # Errors
/// The lookup's error.
pub fn name<R: Borrow<AliasRouting>, E>(
    qualifier: &Qualifier,
    draw: u64,
    alias: impl FnOnce(&AliasName) -> Result<Option<(R, Option<R>)>, E>,
) -> Result<Option<Named>, E> {
    Ok(Some(match qualifier {
        Qualifier::Latest => Named {
            target: Target::Latest,
            previous: Some(Previous::Latest),
        },
        Qualifier::Version(n) => Named {
            target: Target::Version(*n),
            previous: None,
        },
        Qualifier::Alias(a) => {
            let Ok(a) = AliasName::new(a.as_str()) else {
                return Ok(None);
            };
            let Some((routing, previous)) = alias(&a)? else {
                return Ok(None);
            };
            Named {
                target: Target::Version(alias::pick(routing.borrow(), draw)),
                previous: previous.map(|r| Previous::Version(alias::pick(r.borrow(), draw))),
            }
        }
    }))
}

/// Which of `newest` and `previous` runs, and which is to be prepared: the previous one
/// while the newest is not `ready` and the previous one is (the caller starts preparing
/// the newest); otherwise the newest, whether ready or not.
pub fn prefer_prepared<F>(
    newest: F,
    previous: Option<F>,
    ready: impl Fn(&F) -> bool,
) -> (F, Option<F>) {
    match previous {
        Some(prev) if !ready(&newest) && ready(&prev) => (prev, Some(newest)),
        _ => (newest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RouteSpec;
    use std::convert::Infallible;

    fn v(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn routing(to: u32) -> AliasRouting {
        AliasRouting::new(vec![RouteSpec {
            version: v(to),
            weight: None,
        }])
        .expect("valid routing")
    }

    fn none(_: &AliasName) -> Result<Option<(AliasRouting, Option<AliasRouting>)>, Infallible> {
        Ok(None)
    }

    #[test]
    fn latest_and_a_version_need_no_lookup() {
        assert_eq!(
            name(&Qualifier::Latest, 0, none),
            Ok(Some(Named {
                target: Target::Latest,
                previous: Some(Previous::Latest)
            }))
        );
        assert_eq!(
            name(&Qualifier::Version(v(3)), 0, none),
            Ok(Some(Named {
                target: Target::Version(v(3)),
                previous: None
            }))
        );
    }

    #[test]
    fn an_alias_draws_its_version_and_its_previous_one() {
        let (now, before) = (routing(2), routing(1));
        let named = name(&Qualifier::Alias("live".into()), 7, |a| {
            assert_eq!(a.as_str(), "live");
            Ok::<_, Infallible>(Some((&now, Some(&before))))
        });
        assert_eq!(
            named,
            Ok(Some(Named {
                target: Target::Version(v(2)),
                previous: Some(Previous::Version(v(1)))
            }))
        );
    }

    #[test]
    fn a_missing_or_invalid_alias_names_nothing_and_lookup_errors_pass_through() {
        assert_eq!(name(&Qualifier::Alias("gone".into()), 0, none), Ok(None));
        assert_eq!(
            name(&Qualifier::Alias("Not Valid".into()), 0, none),
            Ok(None)
        );
        let failed = name(&Qualifier::Alias("live".into()), 0, |_| {
            Err::<Option<(AliasRouting, Option<AliasRouting>)>, _>("store down")
        });
        assert_eq!(failed, Err("store down"));
    }

    #[test]
    fn the_previous_version_runs_only_while_the_newest_is_unprepared_and_it_is_prepared() {
        let ready = |f: &&str| f.ends_with("ready");
        assert_eq!(
            prefer_prepared("new", Some("old-ready"), ready),
            ("old-ready", Some("new"))
        );
        assert_eq!(
            prefer_prepared("new-ready", Some("old-ready"), ready),
            ("new-ready", None)
        );
        assert_eq!(prefer_prepared("new", Some("old"), ready), ("new", None));
        assert_eq!(prefer_prepared("new", None, ready), ("new", None));
    }
}
