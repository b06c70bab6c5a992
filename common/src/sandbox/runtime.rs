//! The runtime releases a node hosts: the current one and the next one being canaried.
//!
//! Owns what differs between them. The next release (2026.11) drops the deprecated
//! `strata.log_v0` import, so a guest importing it fails to link there, and turns on
//! Cranelift's NaN canonicalisation (deterministic NaN bit patterns across hosts), which
//! changes compiled code and so the engine fingerprint: the two releases never share
//! precompiled artifacts. Never decides which release an invocation runs on (that is
//! `policy::canary` and the nodes).

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the two runtime releases a node hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// The release in production: every import of the guest ABI, deprecated ones included.
    #[default]
    Current,
    /// The release being rolled out by the canary.
    Next,
}

impl Release {
    /// Both releases, current first.
    pub const ALL: [Release; 2] = [Release::Current, Release::Next];

    /// The release's public name, as `runtime = "..."` in a function's config pins it.
    pub fn name(self) -> &'static str {
        match self {
            Release::Current => "2026.10",
            Release::Next => "2026.11",
        }
    }

    /// The release called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether guests may import the deprecated `strata.log_v0`.
    pub(super) fn has_legacy_log(self) -> bool {
        self == Release::Current
    }

    /// Whether Cranelift canonicalises NaNs.
    pub(super) fn canonicalizes_nans(self) -> bool {
        self == Release::Next
    }
}

/// The canary's side a release is on, and back.
impl From<Release> for crate::policy::canary::Side {
    fn from(r: Release) -> Self {
        match r {
            Release::Current => Self::Current,
            Release::Next => Self::Next,
        }
    }
}

impl From<crate::policy::canary::Side> for Release {
    fn from(side: crate::policy::canary::Side) -> Self {
        match side {
            crate::policy::canary::Side::Current => Release::Current,
            crate::policy::canary::Side::Next => Release::Next,
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
