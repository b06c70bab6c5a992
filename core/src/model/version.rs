//! Published versions and aliases: immutable numbered snapshots of a function (code digest
//! plus config) and named pointers at one version or two with weights (traffic shifting).
//!
//! Plain data, validated on construction; choosing between an alias's versions is
//! [`crate::policy::alias`], which takes its randomness from the caller.

use super::{ArtifactDigest, FunctionConfig, FunctionName};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::NonZeroU32;

/// Why an alias name or routing was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// The name does not match `[a-z][a-z0-9-]{0,63}`.
    #[error(
        "alias name {0:?} must start with a-z, contain only a-z, 0-9 and '-', and be at most 64 characters"
    )]
    Name(String),
    /// Not one or two entries.
    #[error("routing must name one or two versions, got {0}")]
    Entries(usize),
    /// A weight outside `1..=100`.
    #[error("weight {0} of version {1} is outside 1..=100")]
    Weight(u32, NonZeroU32),
    /// Weights that do not add up to 100.
    #[error("weights must add up to 100, got {0}")]
    Sum(u32),
    /// The same version named twice.
    #[error("version {0} is named twice")]
    Duplicate(NonZeroU32),
}

/// An alias's name: `[a-z][a-z0-9-]{0,63}`, so it can never be read as a version number or
/// as `$LATEST`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AliasName(String);

impl AliasName {
    /// Validates `s` as an alias name.
    ///
    /// # Errors
    /// [`AliasError::Name`] when `s` does not match `[a-z][a-z0-9-]{0,63}`.
    pub fn new(s: impl Into<String>) -> Result<Self, AliasError> {
        let s = s.into();
        let ok = s.len() <= 64
            && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s))
        } else {
            Err(AliasError::Name(s))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AliasName {
    type Error = AliasError;
    fn try_from(s: String) -> Result<Self, AliasError> {
        Self::new(s)
    }
}

impl From<AliasName> for String {
    fn from(n: AliasName) -> String {
        n.0
    }
}

impl fmt::Display for AliasName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One target of an alias: a version and the percentage of traffic it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteWeight {
    /// The published version.
    pub version: NonZeroU32,
    /// Percentage of invocations, `1..=100`.
    pub weight: u32,
}

/// Where an alias sends traffic: one version (weight 100) or two whose weights add up to
/// 100. Always valid once constructed (deserialisation validates too).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
// Serialised in the same shape it is read in, so it round-trips through bincode too.
#[serde(try_from = "Vec<RouteSpec>", into = "Vec<RouteSpec>")]
pub struct AliasRouting(Vec<RouteWeight>);

/// A routing entry as written by a client: a single entry may omit its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The published version.
    pub version: NonZeroU32,
    /// Percentage of invocations; defaults to 100.
    #[serde(default)]
    pub weight: Option<u32>,
}

impl AliasRouting {
    /// Validates `entries`: one or two distinct versions, weights `1..=100` adding up to
    /// 100; a missing weight counts as 100.
    ///
    /// # Errors
    /// The first [`AliasError`] found.
    pub fn new(entries: Vec<RouteSpec>) -> Result<Self, AliasError> {
        if !(1..=2).contains(&entries.len()) {
            return Err(AliasError::Entries(entries.len()));
        }
        let routes: Vec<RouteWeight> = entries
            .iter()
            .map(|e| RouteWeight {
                version: e.version,
                weight: e.weight.unwrap_or(100),
            })
            .collect();
        for r in &routes {
            if !(1..=100).contains(&r.weight) {
                return Err(AliasError::Weight(r.weight, r.version));
            }
        }
        if let [a, b] = routes.as_slice()
            && a.version == b.version
        {
            return Err(AliasError::Duplicate(a.version));
        }
        let sum: u32 = routes.iter().map(|r| r.weight).sum();
        if sum != 100 {
            return Err(AliasError::Sum(sum));
        }
        Ok(Self(routes))
    }

    /// All of the traffic to `version`.
    pub fn single(version: NonZeroU32) -> Self {
        Self(vec![RouteWeight {
            version,
            weight: 100,
        }])
    }

    /// The targets, in the order given.
    pub fn routes(&self) -> &[RouteWeight] {
        &self.0
    }

    /// Whether any target is `version`.
    pub fn targets(&self, version: NonZeroU32) -> bool {
        self.0.iter().any(|r| r.version == version)
    }
}

impl TryFrom<Vec<RouteSpec>> for AliasRouting {
    type Error = AliasError;
    fn try_from(v: Vec<RouteSpec>) -> Result<Self, AliasError> {
        Self::new(v)
    }
}

impl From<AliasRouting> for Vec<RouteSpec> {
    fn from(r: AliasRouting) -> Self {
        r.0.into_iter()
            .map(|r| RouteSpec {
                version: r.version,
                weight: Some(r.weight),
            })
            .collect()
    }
}

/// A published, immutable version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The function it belongs to.
    pub function: FunctionName,
    /// Its number: 1 for the first publish, then increasing by one, never reused.
    pub version: NonZeroU32,
    /// The code's content address.
    pub digest: ArtifactDigest,
    /// The configuration at publish time.
    pub config: FunctionConfig,
    /// Free text given at publish time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Publish time, milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// A named pointer at one or two published versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    /// The alias's name.
    pub name: AliasName,
    /// The function it belongs to.
    pub function: FunctionName,
    /// Where its traffic goes.
    pub routing: AliasRouting,
    /// Return to 100% of the older version when the newer one of a two-version routing
    /// fails more often (the runtime canary's test, `policy::rollout`). Default false.
    #[serde(default)]
    pub auto_rollback: bool,
    /// The automatic rollback that set the current routing, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<Rollback>,
    /// Registry revision of the last change.
    pub revision: u64,
}

/// An automatic rollback of an alias: what it rolled back from, why, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The routing before the rollback.
    pub from: AliasRouting,
    /// The version the alias now points at (the older one).
    pub to: NonZeroU32,
    /// The version rolled back (the newer one).
    pub new: NonZeroU32,
    /// Invocations of the older version counted while judging.
    pub old_invocations: u32,
    /// Of which failed.
    pub old_failures: u32,
    /// Invocations of the newer version counted while judging.
    pub new_invocations: u32,
    /// Of which failed.
    pub new_failures: u32,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn alias_names_are_never_numeric_or_latest() {
        assert!(AliasName::new("prod").is_ok());
        assert!(AliasName::new("blue-2").is_ok());
        for bad in ["", "3", "2x", "$LATEST", "Prod", "a_b", &"a".repeat(65)] {
            assert!(AliasName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn routing_needs_one_or_two_versions_summing_to_100() {
        let spec = |version, weight| RouteSpec {
            version: v(version),
            weight,
        };
        let one = AliasRouting::new(vec![spec(3, None)]).expect("single");
        assert_eq!(
            one.routes(),
            &[RouteWeight {
                version: v(3),
                weight: 100
            }]
        );
        assert!(AliasRouting::new(vec![spec(3, Some(90)), spec(4, Some(10))]).is_ok());
        assert_eq!(
            AliasRouting::new(vec![spec(3, Some(90)), spec(4, Some(20))]),
            Err(AliasError::Sum(110))
        );
        assert_eq!(
            AliasRouting::new(vec![spec(3, Some(0)), spec(4, Some(100))]),
            Err(AliasError::Weight(0, v(3)))
        );
        assert_eq!(
            AliasRouting::new(vec![spec(3, Some(50)), spec(3, Some(50))]),
            Err(AliasError::Duplicate(v(3)))
        );
        assert_eq!(AliasRouting::new(vec![]), Err(AliasError::Entries(0)));
        assert_eq!(
            AliasRouting::new(vec![spec(1, None), spec(2, None), spec(3, None)]),
            Err(AliasError::Entries(3))
        );
    }

    #[test]
    fn routing_json_is_validated_on_the_way_in() {
        let ok: AliasRouting =
            serde_json::from_str(r#"[{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]"#)
                .expect("valid");
        assert_eq!(ok.routes().len(), 2);
        assert!(serde_json::from_str::<AliasRouting>(r#"[{"version": 0}]"#).is_err());
        assert!(serde_json::from_str::<AliasRouting>(r#"[{"version": 1, "weight": 50}]"#).is_err());
        assert!(
            serde_json::from_str::<AliasRouting>(r#"[{"version": 1, "wieght": 100}]"#).is_err()
        );
    }
}
