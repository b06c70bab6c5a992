//! Tenant tokens as they are stored and pushed: a SHA-256 hash, never the token itself.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The hex SHA-256 of a bearer token. Regions store only this, and push it to POPs, so a
/// POP authenticates a device by hashing its bearer token and looking the hash up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(String);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> Self {
        // Hashed on every authenticated request: the hex digits are written straight into
        // one buffer (`hex::encode` collects them char by char).
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for b in Sha256::digest(token.as_bytes()) {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        Self(hex)
    }

    /// A hash as stored (64 lowercase hex digits); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<Self> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_hex_sha256_and_parse_back() {
        let h = TokenHash::of("st_abc");
        assert_eq!(h.as_str().len(), 64);
        assert_eq!(TokenHash::from_hex(h.as_str()), Some(h));
        assert_eq!(TokenHash::from_hex("xyz"), None);
        // FIPS 180-2's example: SHA-256("abc"), lowercase.
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
