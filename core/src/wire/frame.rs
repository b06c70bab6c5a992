//! Length-prefixed frames: a 4-byte big-endian body length, then the bincode body.

use super::{MAX_FRAME_LEN, Message};

/// Why bytes could not become a message (or a message could not be sent).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame header announces a body over the limit.
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body decoded but left bytes over.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The stream ended before a whole frame arrived.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The underlying stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// The 4-byte header in front of every frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Body length in bytes.
    pub len: usize,
}

impl FrameHeader {
    /// Header size in bytes.
    pub const SIZE: usize = 4;

    /// Parses a header and checks it against `limit`.
    ///
    /// # Errors
    /// [`WireError::FrameTooLarge`] when the announced body exceeds `limit`.
    pub fn parse(bytes: [u8; 4], limit: usize) -> Result<Self, WireError> {
        let len = u32::from_be_bytes(bytes) as usize;
        if len > limit.min(MAX_FRAME_LEN) {
            return Err(WireError::FrameTooLarge {
                len,
                limit: limit.min(MAX_FRAME_LEN),
            });
        }
        Ok(Self { len })
    }
}

fn config() -> impl bincode::config::Config {
    // The limit bounds every length prefix inside the body, so a hostile body cannot make
    // the decoder allocate more than a frame's worth.
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Encodes `msg` as one frame (header + body).
///
/// # Errors
/// [`WireError::FrameTooLarge`] when the encoded body would exceed [`MAX_FRAME_LEN`].
pub fn encode(msg: &Message) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; FrameHeader::SIZE];
    bincode::serde::encode_into_std_write(msg, &mut out, config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = out.len() - FrameHeader::SIZE;
    let header = u32::try_from(len)
        .ok()
        .filter(|_| len <= MAX_FRAME_LEN)
        .ok_or(WireError::FrameTooLarge {
            len,
            limit: MAX_FRAME_LEN,
        })?;
    out[..FrameHeader::SIZE].copy_from_slice(&header.to_be_bytes());
    Ok(out)
}

/// Decodes one frame body (without its header).
///
/// # Errors
/// [`WireError::Malformed`] or [`WireError::TrailingBytes`] for anything that is not
/// exactly one message.
pub fn decode(body: &[u8]) -> Result<Message, WireError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge {
            len: body.len(),
            limit: MAX_FRAME_LEN,
        });
    }
    let (msg, used) = bincode::serde::decode_from_slice::<Message, _>(body, config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(WireError::TrailingBytes(body.len() - used));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ApiError, ArtifactDigest, FunctionName, InvokeRequest, Qualifier, RequestId,
    };
    use proptest::prelude::*;

    fn sample_invoke(payload: Vec<u8>) -> Message {
        Message::Invoke(InvokeRequest {
            request_id: RequestId(42),
            token: Some("tok".into()),
            function: FunctionName::new("hello").expect("valid name"),
            qualifier: Qualifier::Latest,
            payload: payload.into(),
            invocation_type: Default::default(),
            affinity: None,
            memory_mb: Some(256),
            env: vec![("REQUEST_METHOD".into(), "GET".into())],
            route: None,
            http: None,
            http_source: None,
            authorized_tenant: None,
        })
    }

    #[test]
    fn messages_round_trip() {
        for msg in [
            sample_invoke(b"hi".to_vec()),
            Message::Ping { nonce: 7 },
            Message::Error(ApiError::not_found("function x")),
            Message::FetchArtifact {
                digest: ArtifactDigest::of(b"m"),
                engine: super::super::EngineFingerprint("e".into()),
            },
        ] {
            let frame = encode(&msg).expect("encodes");
            assert_eq!(decode(&frame[4..]).expect("decodes"), msg);
        }
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let err = FrameHeader::parse(u32::MAX.to_be_bytes(), MAX_FRAME_LEN);
        assert!(matches!(err, Err(WireError::FrameTooLarge { .. })));
    }

    #[test]
    fn a_name_that_breaks_validation_is_malformed() {
        // Hand-build an Invoke whose function name is invalid: decoding must refuse it.
        let frame = encode(&sample_invoke(vec![])).expect("encodes");
        let mut body = frame[4..].to_vec();
        let pos = body
            .windows(5)
            .position(|w| w == b"hello")
            .expect("name present");
        body[pos] = b'H';
        assert!(matches!(decode(&body), Err(WireError::Malformed(_))));
    }

    fn sample_releases() -> Message {
        let hint = |name: &str, release: &str| super::super::ReleaseHint {
            function: crate::model::FunctionKey {
                tenant: crate::model::TenantId::new("acme").expect("valid tenant"),
                name: FunctionName::new(name).expect("valid name"),
            },
            release: release.into(),
        };
        Message::Releases {
            full: true,
            releases: vec![hint("plain", "2026.11"), hint("legacy", "2026.10")],
            canary_percent: 10,
        }
    }

    #[test]
    fn release_hints_round_trip() {
        for msg in [
            sample_releases(),
            Message::Releases {
                full: false,
                releases: Vec::new(),
                canary_percent: 0,
            },
        ] {
            let frame = encode(&msg).expect("encodes");
            assert_eq!(decode(&frame[4..]).expect("decodes"), msg);
        }
        // A verdict change is one small message: one function, a few dozen bytes.
        let Message::Releases { mut releases, .. } = sample_releases() else {
            unreachable!("sample is releases")
        };
        releases.truncate(1);
        let change = encode(&Message::Releases {
            full: false,
            releases,
            canary_percent: 10,
        })
        .expect("encodes");
        assert!(change.len() < 64, "{} bytes", change.len());
    }

    #[test]
    fn garbage_release_hints_are_typed_errors() {
        let frame = encode(&sample_releases()).expect("encodes");
        let body = &frame[4..];
        // Cut anywhere: never a message, never a panic.
        for cut in 0..body.len() {
            assert!(decode(&body[..cut]).is_err(), "decoded a cut at {cut}");
        }
        // A function name that breaks validation is refused, not passed on.
        let mut bad = body.to_vec();
        let pos = bad
            .windows(5)
            .position(|w| w == b"plain")
            .expect("name present");
        bad[pos] = b'H';
        assert!(matches!(decode(&bad), Err(WireError::Malformed(_))));
        // A list length far beyond the frame is refused before allocating.
        let mut huge = body[..1].to_vec();
        huge.push(1);
        huge.extend([0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn a_certificate_update_round_trips_and_its_debug_hides_the_key() {
        let msg = Message::Updates {
            revision: 7,
            snapshot: false,
            updates: vec![
                crate::wire::Update::Certificate {
                    host: "*.shop.example".into(),
                    certificate: Some(crate::wire::PushedCertificate {
                        tenant: crate::model::TenantId::new("acme").expect("valid"),
                        chain_pem: "-----BEGIN CERTIFICATE-----\n".into(),
                        key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n".into(),
                        not_after: 1_800_000_000,
                    }),
                },
                crate::wire::Update::Certificate {
                    host: "old.example".into(),
                    certificate: None,
                },
            ],
        };
        let frame = encode(&msg).expect("encodes");
        assert_eq!(decode(&frame[4..]).expect("decodes"), msg);
        let shown = format!("{msg:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }

    proptest! {
        #[test]
        fn release_hints_survive_mutation(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let frame = encode(&sample_releases()).expect("encodes");
            let mut body = frame[4..].to_vec();
            for (i, b) in flips {
                let n = body.len();
                body[i % n] ^= b;
            }
            let _ = decode(&body);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn invoke_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2048), nonce in any::<u64>()) {
            for msg in [sample_invoke(payload.clone()), Message::Pong { nonce }] {
                let frame = encode(&msg).expect("encodes");
                prop_assert_eq!(decode(&frame[4..]).expect("decodes"), msg);
            }
        }

        #[test]
        fn mutated_frames_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let frame = encode(&sample_invoke(payload)).expect("encodes");
            let mut body = frame[4..].to_vec();
            for (i, b) in flips {
                let n = body.len();
                body[i % n] ^= b;
            }
            let _ = decode(&body);
        }
    }
}
