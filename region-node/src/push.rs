//! The push stream: one long-lived QUIC stream per POP carrying registry changes (token
//! hashes, `$LATEST`, versions, aliases, deletes) from the store's watch. A POP opens it
//! with [`Message::Subscribe`] and the revision it last applied; it gets the changes since
//! then from the store's history (or, if that was compacted, a snapshot marked as such),
//! then every change as it commits.
//!
//! Bounded: the watch reads the history a page at a time and buffers at most the store's
//! live-channel bound; a POP that reads too slowly makes its watch lag, which re-reads the
//! history instead of buffering more. The task ends when the POP stops the stream, the
//! connection ends (its task owns this one), or a write fails.

use crate::registry::{REGISTRY_BUCKETS, Registry};
use crate::store::{Store, WatchEvent};
use common::transport::ServerStream;
use common::wire::Message;
use tracing::{debug, warn};

/// Serves a POP's subscription on `stream` from revision `since`.
pub async fn serve(mut stream: ServerStream, store: Store, since: u64) {
    // The first message says the subscription is accepted, before any catch-up: a POP
    // that is already current has nothing else to wait for.
    let mut first = Message::Updates {
        revision: since,
        snapshot: false,
        updates: Vec::new(),
    };
    let mut watch = store.watch(&REGISTRY_BUCKETS, since);
    // A POP ahead of this store (the region's state was replaced) cannot catch up from
    // history: it gets the whole state instead.
    let reader = store.clone();
    match tokio::task::spawn_blocking(move || reader.revision()).await {
        Ok(Ok(current)) if since > current => {
            let reader = store.clone();
            match tokio::task::spawn_blocking(move || reader.snapshot(&REGISTRY_BUCKETS)).await {
                Ok(Ok(s)) => {
                    watch = store.watch(&REGISTRY_BUCKETS, s.revision);
                    first = Message::Updates {
                        revision: s.revision,
                        snapshot: true,
                        updates: Registry::updates_of_snapshot(&s),
                    };
                }
                _ => return warn!("cannot read a snapshot for a POP ahead of this region"),
            }
        }
        Ok(Ok(_)) => {}
        _ => return warn!("cannot read the store's revision; closing the push stream"),
    }
    if let Err(e) = stream.send(&first).await {
        return debug!(error = %e, "push stream closed");
    }
    let stopped = stream.stopped();
    tokio::pin!(stopped);
    debug!(since, "POP subscribed");
    loop {
        let event = tokio::select! {
            event = watch.next() => event,
            () = &mut stopped => {
                debug!(revision = watch.revision(), "POP ended its subscription");
                return;
            }
        };
        let msg = match event {
            Ok(WatchEvent::Snapshot(s)) => Message::Updates {
                revision: s.revision,
                snapshot: true,
                updates: Registry::updates_of_snapshot(&s),
            },
            // Changes with no update for POPs still move the POP's revision forward.
            Ok(WatchEvent::Change(c)) => Message::Updates {
                revision: c.revision,
                snapshot: false,
                updates: Registry::update_of(&c).into_iter().collect(),
            },
            Err(e) => {
                warn!(error = %e, "registry watch failed; closing the push stream");
                return;
            }
        };
        if let Err(e) = stream.send(&msg).await {
            debug!(error = %e, "push stream closed");
            return;
        }
    }
}
