//! The push stream: one long-lived QUIC stream per POP carrying registry changes (token
//! hashes, `$LATEST`, versions, aliases, deletes) from the store's watch. A POP opens it
//! with [`Message::Subscribe`] and the revision it last applied; it gets the changes since
//! then from the store's history (or, if that was compacted, a snapshot marked as such),
//! then [`Message::CaughtUp`] (the POP's pushed state is now the region's: only then may
//! it refuse a token it was not sent), then every change as it commits.
//!
//! Bounded: the watch reads the history a page at a time and buffers at most the store's
//! live-channel bound; a POP that reads too slowly makes its watch lag, which re-reads the
//! history instead of buffering more. The task ends when the POP stops the stream, the
//! connection ends (its task owns this one), or a write fails.
//!
//! Trending hints ([`crate::trend`]) are interleaved with the updates as they come; a POP
//! too slow for the hint channel skips hints rather than holding the region's memory.
//!
//! Runtime releases ([`crate::canary`]): right after accepting, the stream carries the
//! canary's whole verdict state ([`Message::Releases`] with `full`), then one small
//! message per verdict as it is decided. These are not advisory (a POP that missed one
//! would keep a function on the wrong release), so a POP too slow for the verdict channel
//! gets the whole state again instead of the changes it skipped: bounded either way.

use crate::canary::RuntimeCanary;
use crate::registry::{REGISTRY_BUCKETS, Registry};
use crate::store::{Snapshot, Store, WatchEvent};
use common::transport::ServerStream;
use common::wire::{Message, ReleaseHint, Update};
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

/// Updates per message of a snapshot, so a large registry never needs one frame over the
/// wire's limit (a pushed update is well under 64 KiB; 1024 of them stay far below it).
const SNAPSHOT_CHUNK: usize = 1024;

/// A snapshot as messages: the first says `snapshot` (the POP forgets what was pushed
/// before); every message but the last carries revision 0, so a POP whose stream breaks
/// half-way resubscribes from scratch instead of from a revision it only partly has.
fn snapshot_messages(s: &Snapshot) -> Vec<Message> {
    let updates = Registry::updates_of_snapshot(s);
    let mut chunks: Vec<Vec<Update>> = updates
        .chunks(SNAPSHOT_CHUNK)
        .map(<[Update]>::to_vec)
        .collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, updates)| Message::Updates {
            revision: if i == last { s.revision } else { 0 },
            snapshot: i == 0,
            updates,
        })
        .collect()
}

/// The canary's whole verdict state as messages: the first says `full` (the POP forgets
/// the releases hinted before), each carries at most [`SNAPSHOT_CHUNK`] functions, and
/// there is always at least one (an empty state still clears the POP's).
fn release_messages(canary_percent: u8, releases: &[ReleaseHint]) -> Vec<Message> {
    let mut chunks: Vec<Vec<ReleaseHint>> = releases
        .chunks(SNAPSHOT_CHUNK)
        .map(<[ReleaseHint]>::to_vec)
        .collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, releases)| Message::Releases {
            full: i == 0,
            releases,
            canary_percent,
        })
        .collect()
}

/// The next verdict on `changes`; never resolves without a canary.
async fn next_verdict(
    changes: &mut Option<broadcast::Receiver<ReleaseHint>>,
) -> Result<ReleaseHint, RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves a POP's subscription on `stream` from revision `since`, with the verdicts of
/// `canary` when the region runs one.
pub async fn serve(
    mut stream: ServerStream,
    store: Store,
    since: u64,
    mut hints: broadcast::Receiver<Message>,
    canary: Option<Arc<RuntimeCanary>>,
) {
    // Subscribed before the state is read, so no verdict falls between the two (one
    // decided in between arrives twice, which is harmless).
    let mut verdicts = canary.as_ref().map(|c| c.subscribe());
    // The first message says the subscription is accepted, before any catch-up: a POP
    // that is already current has nothing else to wait for.
    let mut first = vec![Message::Updates {
        revision: since,
        snapshot: false,
        updates: Vec::new(),
    }];
    let mut watch = store.watch(&REGISTRY_BUCKETS, since).announcing_current();
    // A POP ahead of this store (the region's state was replaced) cannot catch up from
    // history: it gets the whole state instead.
    let reader = store.clone();
    match tokio::task::spawn_blocking(move || reader.revision()).await {
        Ok(Ok(current)) if since > current => {
            let reader = store.clone();
            match tokio::task::spawn_blocking(move || reader.snapshot(&REGISTRY_BUCKETS)).await {
                Ok(Ok(s)) => {
                    watch = store
                        .watch(&REGISTRY_BUCKETS, s.revision)
                        .announcing_current();
                    first = snapshot_messages(&s);
                }
                _ => return warn!("cannot read a snapshot for a POP ahead of this region"),
            }
        }
        Ok(Ok(_)) => {}
        _ => return warn!("cannot read the store's revision; closing the push stream"),
    }
    if let Some(c) = &canary {
        first.extend(release_messages(c.percent(), &c.releases()));
    }
    for msg in &first {
        if let Err(e) = stream.send(msg).await {
            return debug!(error = %e, "push stream closed");
        }
    }
    let stopped = stream.stopped();
    tokio::pin!(stopped);
    debug!(since, "POP subscribed");
    loop {
        let event = tokio::select! {
            event = watch.next() => event,
            hint = hints.recv() => {
                match hint {
                    Ok(msg) => {
                        if let Err(e) = stream.send(&msg).await {
                            debug!(error = %e, "push stream closed");
                            return;
                        }
                    }
                    Err(RecvError::Lagged(skipped)) => {
                        debug!(skipped, "push stream skipped trending hints");
                    }
                    // The node is stopping.
                    Err(RecvError::Closed) => return,
                }
                continue;
            }
            verdict = next_verdict(&mut verdicts) => {
                let messages = match (verdict, &canary) {
                    (Ok(hint), c) => vec![Message::Releases {
                        full: false,
                        releases: vec![hint],
                        canary_percent: c.as_ref().map_or(0, |c| c.percent()),
                    }],
                    (Err(RecvError::Lagged(skipped)), Some(c)) => {
                        debug!(skipped, "push stream fell behind the verdicts; resending them all");
                        release_messages(c.percent(), &c.releases())
                    }
                    // The canary is gone (the node is stopping): no more verdicts.
                    (Err(_), _) => {
                        verdicts = None;
                        Vec::new()
                    }
                };
                for msg in &messages {
                    if let Err(e) = stream.send(msg).await {
                        debug!(error = %e, "push stream closed");
                        return;
                    }
                }
                continue;
            }
            () = &mut stopped => {
                debug!(revision = watch.revision(), "POP ended its subscription");
                return;
            }
        };
        let messages = match event {
            Ok(WatchEvent::Snapshot(s)) => snapshot_messages(&s),
            Ok(WatchEvent::Current(revision)) => vec![Message::CaughtUp { revision }],
            // Changes with no update for POPs still move the POP's revision forward.
            Ok(WatchEvent::Change(c)) => vec![Message::Updates {
                revision: c.revision,
                snapshot: false,
                updates: Registry::update_of(&c).into_iter().collect(),
            }],
            Err(e) => {
                warn!(error = %e, "registry watch failed; closing the push stream");
                return;
            }
        };
        for msg in &messages {
            if let Err(e) = stream.send(msg).await {
                debug!(error = %e, "push stream closed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Bucket, Entry};
    use common::model::TokenHash;

    fn snapshot(tokens: usize) -> Snapshot {
        let entries = (0..tokens)
            .map(|i| {
                let key = TokenHash::of(&format!("tok{i}")).as_str().to_owned();
                let entry = Entry {
                    value: b"t".to_vec(),
                    revision: 1,
                };
                (Bucket::Tokens, key, entry)
            })
            .collect();
        Snapshot {
            revision: 77,
            entries,
        }
    }

    fn shape(messages: &[Message]) -> Vec<(u64, bool, usize)> {
        messages
            .iter()
            .map(|m| match m {
                Message::Updates {
                    revision,
                    snapshot,
                    updates,
                } => (*revision, *snapshot, updates.len()),
                other => panic!("not updates: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_large_snapshot_is_chunked_and_only_its_last_chunk_moves_the_revision() {
        let messages = snapshot_messages(&snapshot(SNAPSHOT_CHUNK + 5));
        assert_eq!(
            shape(&messages),
            [(0, true, SNAPSHOT_CHUNK), (77, false, 5)]
        );
        let three = snapshot_messages(&snapshot(2 * SNAPSHOT_CHUNK + 1));
        assert_eq!(
            shape(&three),
            [
                (0, true, SNAPSHOT_CHUNK),
                (0, false, SNAPSHOT_CHUNK),
                (77, false, 1)
            ]
        );
    }

    #[test]
    fn an_empty_snapshot_is_still_one_message() {
        let messages = snapshot_messages(&snapshot(0));
        assert_eq!(shape(&messages), [(77, true, 0)]);
        let mut fresh = snapshot(0);
        fresh.revision = 0;
        let messages = snapshot_messages(&fresh);
        assert_eq!(shape(&messages), [(0, true, 0)]);
    }

    fn release_shape(messages: &[Message]) -> Vec<(bool, usize)> {
        messages
            .iter()
            .map(|m| match m {
                Message::Releases { full, releases, .. } => (*full, releases.len()),
                other => panic!("not releases: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_verdict_state_is_chunked_and_only_its_first_message_is_full() {
        let hint = ReleaseHint {
            function: common::model::FunctionKey {
                tenant: common::model::TenantId::new("t").expect("tenant"),
                name: common::model::FunctionName::new("f").expect("name"),
            },
            release: "2026.11".into(),
        };
        let all = vec![hint; SNAPSHOT_CHUNK + 3];
        assert_eq!(
            release_shape(&release_messages(10, &all)),
            [(true, SNAPSHOT_CHUNK), (false, 3)]
        );
        // No verdicts still clears what the POP was told before.
        assert_eq!(release_shape(&release_messages(10, &[])), [(true, 0)]);
    }
}
