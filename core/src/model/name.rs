//! Validated identifiers: tenants, functions, qualifiers, nodes and requests.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("{what} must be 1 to {MAX_NAME_LEN} characters long")]
    Length {
        /// What was being named (`function name`, `tenant id`, ...).
        what: &'static str,
    },
    /// The name contains a character outside `[a-z0-9-_]` or does not start with `[a-z0-9]`.
    #[error(
        "{what} {name:?} may contain only a-z, 0-9, '-' and '_' and must start with a letter or digit"
    )]
    Charset {
        /// What was being named.
        what: &'static str,
        /// The refused name.
        name: String,
    },
}

/// Longest tenant, function or alias name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

fn check_name(what: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(NameError::Length { what });
    }
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::Charset {
            what,
            name: s.to_owned(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates `s` as a name.
            ///
            /// # Errors
            /// [`NameError`] when `s` is empty, too long or uses other characters.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check_name($what, &s)?;
                Ok(Self(s))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A tenant: the unit of isolation, billing and limits.
    TenantId,
    "tenant id"
);
name_type!(
    /// A function's name, unique within its tenant.
    FunctionName,
    "function name"
);

/// A function's identity across the platform: its tenant and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FunctionKey {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The function's name within the tenant.
    pub name: FunctionName,
}

impl fmt::Display for FunctionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// Which version of a function an invocation asks for (`?qualifier=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Qualifier {
    /// `$LATEST`, the mutable head (the default).
    #[default]
    Latest,
    /// An immutable published version.
    Version(NonZeroU32),
    /// A named alias pointing at one or two versions.
    Alias(String),
}

impl FromStr for Qualifier {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s == "$LATEST" {
            return Ok(Self::Latest);
        }
        if let Ok(n) = s.parse::<NonZeroU32>() {
            return Ok(Self::Version(n));
        }
        check_name("alias", s)?;
        Ok(Self::Alias(s.to_owned()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("$LATEST"),
            Self::Version(n) => write!(f, "{n}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// A node's identity as shown in `x-strata-executed-at` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An invocation's id: 16 random bytes, shown as 32 hex digits. Assigned by the first
/// node that sees the request and kept when it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u128);

impl RequestId {
    /// A fresh random id. Randomness comes from the caller's thread RNG: request ids are
    /// identifiers, not decisions, so they stay out of the deterministic policies.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The id's 32 lowercase hex digits (what `Display` writes), without the formatter:
    /// response headers and guest environments carry it on every request.
    pub fn hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in self.0.to_be_bytes().into_iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        out
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_shows_as_32_lowercase_hex_digits() {
        for id in [0, 1, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let expected = format!("{id:032x}");
            assert_eq!(RequestId(id).to_string(), expected);
            assert_eq!(&RequestId(id).hex()[..], expected.as_bytes());
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(FunctionName::new("hello-world_2").is_ok());
        assert!(FunctionName::new("").is_err());
        assert!(FunctionName::new("Hello").is_err());
        assert!(FunctionName::new("-x").is_err());
        assert!(FunctionName::new("a/b").is_err());
        assert!(FunctionName::new("x".repeat(65)).is_err());
    }

    #[test]
    fn qualifiers_parse() {
        assert_eq!("$LATEST".parse::<Qualifier>(), Ok(Qualifier::Latest));
        assert!(matches!("3".parse::<Qualifier>(), Ok(Qualifier::Version(n)) if n.get() == 3));
        assert_eq!(
            "prod".parse::<Qualifier>(),
            Ok(Qualifier::Alias("prod".into()))
        );
        assert!(
            "0".parse::<Qualifier>()
                .is_ok_and(|q| q == Qualifier::Alias("0".into()))
        );
        assert!("$nope".parse::<Qualifier>().is_err());
    }
}
