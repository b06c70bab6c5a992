//! Named streams on JetStream: creating them, their limit, and appends under a caller's
//! bound. The server-side `max_msgs` is the largest bound any append asked for, raised and
//! never lowered: lowering `max_msgs` makes the server delete the oldest messages (it does
//! so even with discard policy `new`), which would silently drop accepted events when the
//! async queue appends device events under `max_queued` and its own retries under twice
//! that. An append under a smaller bound reads the count and publishes with
//! `Nats-Expected-Last-Sequence`, so its check and its append are one atomic step at the
//! server, as redb's transaction makes them.

use super::names::escape;
use super::{Inner, err};
use crate::store::StoreError;
use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, Stream};

/// Retries of an append under a bound below the stream's limit that raced other appends
/// to the same stream (each retry re-reads the count).
const APPEND_RETRIES: usize = 32;

impl Inner {
    /// The named stream and its server-side `max_msgs`, created (or its limit raised to
    /// `create`) as needed; `None` when it does not exist and `create` is `None`. The
    /// limit is never lowered (see the module docs).
    pub(super) async fn stream(
        &self,
        name: &str,
        create: Option<u64>,
    ) -> Result<Option<(Stream, u64)>, StoreError> {
        let cached = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        if let Some((s, max)) = cached
            && create.is_none_or(|m| m <= max)
        {
            return Ok(Some((s, max)));
        }
        let stream_name = format!("{}-q-{}", self.prefix, escape(name, false));
        let Some(asked) = create else {
            return match self.js.get_stream(&stream_name).await {
                Ok(s) => {
                    let max = server_max(&s);
                    Ok(Some((s, max)))
                }
                Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                    Ok(None)
                }
                Err(e) => Err(err("opening a stream", e)),
            };
        };
        let config = stream::Config {
            name: stream_name.clone(),
            subjects: vec![self.stream_subject(name)],
            max_messages: i64::try_from(asked).unwrap_or(i64::MAX),
            discard: DiscardPolicy::New,
            allow_direct: true,
            ..Default::default()
        };
        let mut s = self
            .js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| err("creating a stream", e))?;
        // An existing stream (made by an earlier run, or by another region on the same
        // server) keeps a larger limit; a smaller one is raised to what is asked.
        if server_max(&s) < asked {
            self.js
                .update_stream(config.clone())
                .await
                .map_err(|e| err("raising a stream's bound", e))?;
            s = self
                .js
                .get_stream(&stream_name)
                .await
                .map_err(|e| err("opening a stream", e))?;
        }
        let max = server_max(&s);
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), (s.clone(), max));
        Ok(Some((s, max)))
    }

    /// Appends `value` to `name` under `bound` (see [`crate::store::Backend::append`]).
    pub(super) async fn append(
        &self,
        name: &str,
        value: Vec<u8>,
        bound: u64,
    ) -> Result<u64, StoreError> {
        let full = || StoreError::StreamFull {
            stream: name.to_owned(),
            max: bound,
        };
        let Some((s, server_max)) = self.stream(name, Some(bound)).await? else {
            return Err(StoreError::Backend(format!(
                "stream {name} was not created"
            )));
        };
        let subject = self.stream_subject(name);
        if bound >= server_max {
            // The server's own limit is the bound: discard policy `new` refuses past it.
            return match self.publish_to_stream(&subject, &value, None).await? {
                Published::Appended(seq) => Ok(seq),
                Published::Full | Published::Raced => Err(full()),
            };
        }
        for _ in 0..APPEND_RETRIES {
            let state = s
                .get_info()
                .await
                .map_err(|e| err("reading a stream's state", e))?
                .state;
            if state.messages >= bound {
                return Err(full());
            }
            // Acks between the check and the publish only lower the count; another append
            // moves the last sequence, and the server then refuses this one: check again.
            let expected = Some(state.last_sequence);
            match self.publish_to_stream(&subject, &value, expected).await? {
                Published::Appended(seq) => return Ok(seq),
                Published::Full => return Err(full()),
                Published::Raced => {}
            }
        }
        Err(StoreError::Backend(format!(
            "appending to {name}: still racing other appends after {APPEND_RETRIES} tries"
        )))
    }

    /// Publishes `value` on a named stream's `subject`, only if the stream's last sequence
    /// is `expected_last` when given.
    async fn publish_to_stream(
        &self,
        subject: &str,
        value: &[u8],
        expected_last: Option<u64>,
    ) -> Result<Published, StoreError> {
        let mut headers = HeaderMap::new();
        if let Some(seq) = expected_last {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                seq.to_string().as_str(),
            );
        }
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, value.to_vec().into())
            .await
            .map_err(|e| err("appending", e))?
            .await;
        match ack {
            Ok(ack) => Ok(Published::Appended(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Published::Raced),
            // Discard policy `new` refuses the message with "maximum messages exceeded".
            Err(e)
                if e.kind() == PublishErrorKind::Other
                    && e.to_string().contains("maximum messages") =>
            {
                Ok(Published::Full)
            }
            Err(e) => Err(err("appending", e)),
        }
    }
}

/// What one publish to a named stream did.
enum Published {
    /// Appended at this sequence.
    Appended(u64),
    /// Refused: the stream is at the server's limit.
    Full,
    /// Refused: another append moved the stream's last sequence since it was read.
    Raced,
}

/// A stream's server-side `max_msgs` (unlimited, -1, as the largest bound).
fn server_max(s: &Stream) -> u64 {
    u64::try_from(s.cached_info().config.max_messages).unwrap_or(u64::MAX)
}
