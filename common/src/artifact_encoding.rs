//! Artifact bytes as they cross the POP-region wire ([`ArtifactEncoding`]): precompiled
//! code compressed once at the region when a module is deployed, and decoded at the POP
//! with a bound before it is loaded.
//!
//! Owns the choice of codec (zstd, one frame that declares its decoded size) and the
//! decoder's limits; never hashes, loads or stores anything. Compression runs on the
//! caller's thread: callers run it on the blocking pool, like the compilation it follows.

use crate::wire::{ArtifactEncoding, MAX_FRAME_LEN};
use bytes::Bytes;

/// zstd's level for precompiled code: compresses a 393 KB artifact to 66 KB in ~1.4 ms
/// (once, at deploy) and decodes it at ~1 GB/s; higher levels save a few percent more for
/// several times the time.
const LEVEL: i32 = 3;

/// Why encoded artifact bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not one well-formed zstd frame with its decoded size in its header.
    #[error("malformed zstd frame: {0}")]
    Malformed(String),
    /// The frame declares more than the bound.
    #[error("declares {declared} bytes decoded, over the {limit}-byte bound")]
    TooLarge {
        /// Decoded size the frame declares.
        declared: u64,
        /// The bound it exceeds.
        limit: usize,
    },
}

/// `code` encoded for the wire: zstd when that is smaller, else as it is (no copy).
///
/// # Errors
/// Never for valid input in practice; an I/O error from the zstd library (out of memory)
/// is reported rather than hidden.
pub fn encode(code: Vec<u8>) -> std::io::Result<(ArtifactEncoding, Bytes)> {
    let packed = zstd::bulk::compress(&code, LEVEL)?;
    Ok(if packed.len() < code.len() {
        (ArtifactEncoding::Zstd, Bytes::from(packed))
    } else {
        (ArtifactEncoding::Identity, Bytes::from(code))
    })
}

/// The bytes `bytes` encode, at most [`MAX_FRAME_LEN`] of them: a peer can never send
/// more by compressing than it could uncompressed. `Identity` returns `bytes` itself.
///
/// # Errors
/// [`DecodeError`] when the bytes are not a single zstd frame declaring at most the bound,
/// or decode to anything but what the frame declares.
pub fn decode(encoding: ArtifactEncoding, bytes: Bytes) -> Result<Bytes, DecodeError> {
    decode_within(encoding, bytes, MAX_FRAME_LEN)
}

/// [`decode`] with an explicit bound on the decoded size.
///
/// # Errors
/// As [`decode`].
pub fn decode_within(
    encoding: ArtifactEncoding,
    bytes: Bytes,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    match encoding {
        ArtifactEncoding::Identity => Ok(bytes),
        ArtifactEncoding::Zstd => {
            let declared = zstd::zstd_safe::get_frame_content_size(&bytes)
                .map_err(|_| DecodeError::Malformed("no valid frame header".into()))?
                .ok_or_else(|| DecodeError::Malformed("the frame does not say its size".into()))?;
            let len = usize::try_from(declared)
                .ok()
                .filter(|&n| n <= limit)
                .ok_or(DecodeError::TooLarge { declared, limit })?;
            let mut out = Vec::with_capacity(len);
            // The buffer's capacity is the bound: a frame (or frames) decoding to more
            // fails here instead of growing it.
            let written = zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(&bytes[..], &mut out))
                .map_err(|e| DecodeError::Malformed(e.to_string()))?;
            if written != len {
                return Err(DecodeError::Malformed(format!(
                    "decoded {written} bytes, the frame declared {len}"
                )));
            }
            Ok(Bytes::from(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code-like bytes: repetitive enough to compress.
    fn code(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    #[test]
    fn compressible_code_is_sent_as_zstd_and_decodes_to_itself() {
        let code = code(200_000);
        let (encoding, bytes) = encode(code.clone()).expect("encodes");
        assert_eq!(encoding, ArtifactEncoding::Zstd);
        assert!(bytes.len() < code.len() / 4, "{} bytes", bytes.len());
        assert_eq!(decode(encoding, bytes).expect("decodes"), code);
    }

    #[test]
    fn incompressible_bytes_are_sent_as_they_are() {
        // A SHA-256 chain: no redundancy for zstd to find.
        let mut bytes = Vec::new();
        let mut block = [7u8; 32];
        while bytes.len() < 4096 {
            block = *crate::model::ArtifactDigest::of(&block).as_bytes();
            bytes.extend_from_slice(&block);
        }
        let (encoding, sent) = encode(bytes.clone()).expect("encodes");
        assert_eq!(encoding, ArtifactEncoding::Identity);
        assert_eq!(sent, bytes);
        assert_eq!(decode(encoding, sent).expect("identity"), bytes);
    }

    #[test]
    fn a_frame_declaring_more_than_the_bound_is_refused_before_allocating() {
        // A 1 MiB run of zeros is a few dozen bytes of zstd: a bomb against a small bound.
        let (encoding, bomb) = encode(vec![0u8; 1 << 20]).expect("encodes");
        assert!(bomb.len() < 1024);
        assert_eq!(
            decode_within(encoding, bomb, 64 << 10),
            Err(DecodeError::TooLarge {
                declared: 1 << 20,
                limit: 64 << 10
            })
        );
    }

    #[test]
    fn garbage_truncation_and_a_lying_header_are_typed_errors() {
        let (_, good) = encode(code(100_000)).expect("encodes");
        let garbage = Bytes::from_static(b"definitely not zstd");
        assert!(matches!(
            decode(ArtifactEncoding::Zstd, garbage),
            Err(DecodeError::Malformed(_))
        ));
        let truncated = good.slice(..good.len() / 2);
        assert!(matches!(
            decode(ArtifactEncoding::Zstd, truncated),
            Err(DecodeError::Malformed(_))
        ));
        // Two frames back to back: the first header declares only its own size, the
        // second would overflow the buffer sized by it.
        let mut twice = good.to_vec();
        twice.extend_from_slice(&good);
        assert!(matches!(
            decode(ArtifactEncoding::Zstd, Bytes::from(twice)),
            Err(DecodeError::Malformed(_))
        ));
        let mut flipped = good.to_vec();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        assert_ne!(
            decode(ArtifactEncoding::Zstd, Bytes::from(flipped)).ok(),
            Some(Bytes::from(code(100_000))),
            "a corrupted body never decodes to the original"
        );
    }
}
