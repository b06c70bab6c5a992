//! How store names become JetStream names: bucket keys become KV keys (subject tokens) and
//! stream names become JetStream stream names, both by an escaping that is injective and
//! keeps prefixes (the escaped prefix of a key is a prefix of the escaped key), so a prefix
//! listing can compare escaped strings.

use crate::store::Bucket;

/// The escape character; itself always escaped.
const ESCAPE: char = '=';

/// `s` with every character outside `[A-Za-z0-9_-]` (and `/` when `keep_slash`) written
/// as `=XX` per UTF-8 byte. The result is a valid, non-empty subject token and, without
/// `/`, a valid stream name.
pub(super) fn escape(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || (keep_slash && c == '/') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push(ESCAPE);
                out.push_str(&format!("{b:02X}"));
            }
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for text [`escape`] cannot have produced.
pub(super) fn unescape(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == ESCAPE as u8 {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The first subject token of a bucket's keys in the shared KV bucket: `b<code>`, from
/// [`Bucket::code`], so a bucket added to the store needs nothing here.
pub(super) fn bucket_token(bucket: Bucket) -> String {
    format!("b{}", bucket.code())
}

/// The KV key of `key` in `bucket`: `b<code>.<escaped key>_`. The trailing `_` keeps an
/// empty store key a valid (non-empty) token.
pub(super) fn kv_key(bucket: Bucket, key: &str) -> String {
    format!("{}.{}_", bucket_token(bucket), escape(key, true))
}

/// The bucket and store key of a KV key made by [`kv_key`]; `None` for a foreign key.
pub(super) fn parse_kv_key(kv_key: &str) -> Option<(Bucket, String)> {
    let (token, rest) = kv_key.split_once('.')?;
    let code = token.strip_prefix('b')?.parse::<u8>().ok()?;
    let bucket = Bucket::from_code(code)?;
    Some((bucket, unescape(rest.strip_suffix('_')?)?))
}

/// Checks a configured name prefix: it becomes part of stream and bucket names, so only
/// `[A-Za-z0-9_-]`, 1 to 32 characters.
pub(super) fn valid_prefix(prefix: &str) -> bool {
    (1..=32).contains(&prefix.len())
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_keeps_prefixes() {
        for key in ["t/f", "a.b c*>", "=_5F", "", "é/ü", "t/name/0000000001"] {
            let e = escape(key, true);
            assert!(!e.contains(['.', '*', '>', ' ']), "{e}");
            assert_eq!(unescape(&e).as_deref(), Some(key));
            let (b, k) = parse_kv_key(&kv_key(Bucket::Routes, key)).expect("parses");
            assert_eq!((b, k.as_str()), (Bucket::Routes, key));
        }
        assert!(escape("t/fn.x", true).starts_with(&escape("t/fn", true)));
        assert!(!escape("a/b", false).contains('/'));
        assert_ne!(escape("a=", true), escape("a", true));
    }

    #[test]
    fn foreign_or_broken_keys_are_refused() {
        assert_eq!(parse_kv_key("nobucket.x_"), None);
        assert_eq!(parse_kv_key("b250.x_"), None);
        assert_eq!(kv_key(Bucket::Functions, "t/f"), "b2.t/f_");
        assert_eq!(parse_kv_key("functions.x"), None);
        assert_eq!(parse_kv_key("functions.=Z1_"), None);
        assert_eq!(unescape("=4"), None);
        assert!(valid_prefix("strata-1") && !valid_prefix("a.b") && !valid_prefix(""));
    }
}
