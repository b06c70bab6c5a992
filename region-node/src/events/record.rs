//! The durable records of the async queue and the dead-letter queue, as JSON in the store's
//! streams. Owns their format; never performs I/O.

use base64::Engine as _;
use common::model::{FunctionName, Qualifier, TenantId};
use serde::{Deserialize, Serialize};

/// The stream holding queued events (one message per event, re-appended on each attempt).
pub const EVENTS_STREAM: &str = "events";
/// The stream that held every tenant's dead letters before they had one stream each;
/// opening the queue moves what it still holds into the tenants' streams.
pub const LEGACY_DLQ_STREAM: &str = "dlq";

/// The stream holding `tenant`'s dead letters, so listing, replaying and purging them
/// never read another tenant's.
pub fn dlq_stream(tenant: &TenantId) -> String {
    format!("dlq/{tenant}")
}

/// Why an attempt failed: a guest failure (`unhandled`, `timeout`, `out-of-memory`), a
/// platform error kind (`not_found`, `unavailable`, ...), or `too-old` for an event that
/// expired before any attempt ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureCause {
    /// The error kind.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// What an event is for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A device's async invocation.
    #[default]
    Invocation,
    /// An `on_failure` control function run with a failure record. Its own failure is
    /// dead-lettered and never runs another control function.
    OnFailure,
    /// An `on_success` control function run with a success record; as [`Self::OnFailure`].
    OnSuccess,
    /// An `on_runtime_incompatible` control function run with the owner's notification
    /// when the runtime canary pins a function; as [`Self::OnFailure`].
    OnRuntimeIncompatible,
    /// An `on_rollback` control function run with the owner's notification when an alias
    /// is rolled back automatically; as [`Self::OnFailure`].
    OnRollback,
}

impl EventKind {
    /// Whether this event runs a control function (and so never triggers one).
    pub fn is_control(self) -> bool {
        !matches!(self, Self::Invocation)
    }
}

/// One queued event, as stored in [`EVENTS_STREAM`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The invocation's request id (32 hex digits), kept across retries and replays.
    pub request_id: String,
    /// Invocation or control function.
    #[serde(default)]
    pub kind: EventKind,
    /// The owner; events run as this tenant without a token.
    pub tenant: TenantId,
    /// The function to run.
    pub function: FunctionName,
    /// The qualifier asked for.
    #[serde(with = "qualifier")]
    pub qualifier: Qualifier,
    /// The payload (the guest's stdin).
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    /// When the event was accepted, Unix ms.
    pub enqueued_at_ms: u64,
    /// Attempts started so far (recorded before each execution).
    pub attempts: u32,
    /// When the first attempt started, Unix ms.
    pub first_attempt_ms: Option<u64>,
    /// When the last attempt started, Unix ms.
    pub last_attempt_ms: Option<u64>,
    /// Not before this time, Unix ms (backoff).
    pub next_attempt_ms: u64,
    /// The last attempt's failure.
    pub last_error: Option<FailureCause>,
    /// The version the last attempt ran (or resolved to).
    pub version: Option<String>,
}

/// One dead letter, as stored in its tenant's [`dlq_stream`] and served by `/v1/dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The dead letter's id (its sequence in the DLQ stream); set when read back.
    #[serde(default)]
    pub id: u64,
    /// The invocation's request id.
    pub request_id: String,
    /// Invocation, or which control function.
    pub kind: EventKind,
    /// The owner.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// The function.
    #[schema(value_type = String)]
    pub function: FunctionName,
    /// The qualifier asked for.
    #[schema(value_type = String)]
    #[serde(with = "qualifier")]
    pub qualifier: Qualifier,
    /// The version that last ran, if any ran.
    pub version: Option<String>,
    /// The payload, base64.
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub payload: Vec<u8>,
    /// The final failure.
    pub error: FailureCause,
    /// `retries-exhausted`, `too-old` (older than `max_event_age_s` before an attempt or
    /// a retry could start), `unresolvable` (the function or qualifier is gone), or `sync`
    /// (a failed synchronous invocation of a function with `dead_letter_sync`).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// First attempt, Unix ms.
    pub first_attempt_ms: Option<u64>,
    /// Last attempt, Unix ms.
    pub last_attempt_ms: Option<u64>,
    /// When the event was accepted, Unix ms.
    pub enqueued_at_ms: u64,
}

impl DeadLetter {
    /// The dead letter of `event`, which failed finally with `error` for `reason`.
    pub fn of(event: &EventRecord, error: FailureCause, reason: &str) -> Self {
        Self {
            id: 0,
            request_id: event.request_id.clone(),
            kind: event.kind,
            tenant: event.tenant.clone(),
            function: event.function.clone(),
            qualifier: event.qualifier.clone(),
            version: event.version.clone(),
            payload: event.payload.clone(),
            error,
            reason: reason.to_owned(),
            attempts: event.attempts,
            first_attempt_ms: event.first_attempt_ms,
            last_attempt_ms: event.last_attempt_ms,
            enqueued_at_ms: event.enqueued_at_ms,
        }
    }

    /// A fresh event replaying this dead letter: same request id and payload, no attempts.
    pub fn replay(&self, now_ms: u64) -> EventRecord {
        EventRecord {
            request_id: self.request_id.clone(),
            kind: self.kind,
            tenant: self.tenant.clone(),
            function: self.function.clone(),
            qualifier: self.qualifier.clone(),
            payload: self.payload.clone(),
            enqueued_at_ms: now_ms,
            attempts: 0,
            first_attempt_ms: None,
            last_attempt_ms: None,
            next_attempt_ms: now_ms,
            last_error: None,
            version: None,
        }
    }
}

/// What opening the queue needs of a stored event or dead letter: its owner, identity,
/// due time and payload size, read without decoding (or copying) the payload itself, so
/// start-up holds no tenant's payloads in memory.
#[derive(Debug, Deserialize)]
pub struct Meta<'a> {
    /// The invocation's request id.
    pub request_id: String,
    /// Invocation or control function.
    #[serde(default)]
    pub kind: EventKind,
    /// The owner.
    pub tenant: TenantId,
    /// Not before this time, Unix ms (events only; 0 for dead letters).
    #[serde(default)]
    pub next_attempt_ms: u64,
    /// The payload as stored (base64), borrowed from the message when it has no escapes.
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

impl Meta<'_> {
    /// The payload's size in bytes, computed from its base64 length.
    pub fn payload_len(&self) -> u64 {
        let text = self.payload.as_bytes();
        let padding = text.iter().rev().take(2).filter(|&&b| b == b'=').count();
        ((text.len() / 4) * 3).saturating_sub(padding) as u64
    }
}

/// What an `on_success` control function receives on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessRecord {
    /// The invocation's request id.
    pub request_id: String,
    /// The function that succeeded.
    pub function: FunctionName,
    /// The version that ran.
    pub version: String,
    /// Attempts it took.
    pub attempts: u32,
    /// Its stdout, base64.
    #[serde(with = "b64")]
    pub result: Vec<u8>,
}

/// Serde for bytes as a base64 string.
mod b64 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// Serde for a qualifier as its text (`$LATEST`, `3`, `live`).
mod qualifier {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(q: &Qualifier, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&q.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Qualifier, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_reads_the_payload_size_without_decoding_it() {
        for len in 0..40 {
            let letter = DeadLetter {
                id: 0,
                request_id: "r".into(),
                kind: EventKind::Invocation,
                tenant: TenantId::new("t").expect("tenant"),
                function: FunctionName::new("f").expect("name"),
                qualifier: Qualifier::Latest,
                version: None,
                payload: vec![0xfb; len],
                error: FailureCause {
                    kind: "k".into(),
                    message: "m".into(),
                },
                reason: "r".into(),
                attempts: 1,
                first_attempt_ms: None,
                last_attempt_ms: None,
                enqueued_at_ms: 0,
            };
            let bytes = serde_json::to_vec(&letter).expect("encode");
            let meta: Meta<'_> = serde_json::from_slice(&bytes).expect("decode");
            assert_eq!(meta.payload_len(), len as u64, "payload of {len} bytes");
            assert_eq!(meta.tenant, letter.tenant);
            assert!(
                matches!(meta.payload, std::borrow::Cow::Borrowed(_)),
                "the payload text is borrowed, not copied"
            );
        }
    }
}
