//! A watch over some buckets from a revision: the history first (or a snapshot when the
//! history was compacted past that revision), then live changes, gap-free and in revision
//! order (JetStream: a KV watcher with a start revision). On request
//! ([`Watch::announcing_current`]) it also says when it has caught up with the history, as
//! a JetStream KV watcher marks the end of its initial values.

use super::{Backend, Bucket, Change, History, Snapshot, StoreError};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Changes read from the history per step while catching up.
const HISTORY_PAGE: usize = 256;

/// What a [`Watch`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// One change after the previous event.
    Change(Change),
    /// The history no longer reached back far enough: this is the whole state of the
    /// watched buckets at its revision; replace what was built from earlier events.
    Snapshot(Snapshot),
    /// Everything the store held when the history was last read has been delivered: the
    /// events so far are the state as of this revision (at least the store's revision when
    /// the watch began). Only from a watch [`Watch::announcing_current`], once per catch-up
    /// (again after a lag).
    Current(u64),
}

/// See the module docs. Dropping it ends the watch.
#[derive(Debug)]
pub struct Watch {
    backend: Arc<dyn Backend>,
    buckets: Vec<Bucket>,
    live: broadcast::Receiver<Change>,
    /// The revision up to which everything has been delivered.
    last: u64,
    catching_up: bool,
    /// Yield [`WatchEvent::Current`] when a catch-up ends.
    announce: bool,
    pending: VecDeque<Change>,
}

impl Watch {
    pub(super) fn new(backend: Arc<dyn Backend>, buckets: &[Bucket], since: u64) -> Self {
        // Subscribe before reading the history, so no change falls between the two;
        // changes seen in both are told apart by revision.
        let live = backend.subscribe();
        Self {
            backend,
            buckets: buckets.to_vec(),
            live,
            last: since,
            catching_up: true,
            announce: false,
            pending: VecDeque::new(),
        }
    }

    /// This watch also yields [`WatchEvent::Current`] each time it has caught up.
    #[must_use]
    pub fn announcing_current(mut self) -> Self {
        self.announce = true;
        self
    }

    /// The revision up to which events have been delivered.
    pub fn revision(&self) -> u64 {
        self.last
    }

    /// The next event; waits for a live change once caught up.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the history cannot be read, or the store was closed.
    pub async fn next(&mut self) -> Result<WatchEvent, StoreError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                self.last = change.revision;
                if self.buckets.contains(&change.bucket) {
                    return Ok(WatchEvent::Change(change));
                }
                continue;
            }
            if self.catching_up {
                if let Some(snapshot) = self.catch_up().await? {
                    return Ok(WatchEvent::Snapshot(snapshot));
                }
                if !self.catching_up && self.announce {
                    return Ok(WatchEvent::Current(self.last));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(change) if change.revision <= self.last => {}
                Ok(change) => self.pending.push_back(change),
                // Fell behind the live channel's bound: the history has what was missed.
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(StoreError::Backend("the store was closed".into()));
                }
            }
        }
    }

    /// Reads one page of history into `pending`, or a snapshot when it was compacted;
    /// clears `catching_up` once the history has nothing newer.
    async fn catch_up(&mut self) -> Result<Option<Snapshot>, StoreError> {
        let backend = Arc::clone(&self.backend);
        let since = self.last;
        let buckets = self.buckets.clone();
        type Step = Result<(Vec<Change>, Option<Snapshot>), StoreError>;
        let step = tokio::task::spawn_blocking(move || -> Step {
            match backend.history(since, HISTORY_PAGE)? {
                History::Changes(c) => Ok((c, None)),
                History::Compacted => Ok((Vec::new(), Some(backend.snapshot(&buckets)?))),
            }
        })
        .await
        .map_err(|e| StoreError::Backend(format!("history task failed: {e}")))?;
        let (changes, snapshot) = step?;
        if let Some(s) = snapshot {
            self.last = s.revision;
            return Ok(Some(s));
        }
        if changes.is_empty() {
            self.catching_up = false;
        }
        self.pending.extend(changes);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Expect::Any;
    use crate::store::{Bucket, Store, WatchEvent};

    #[tokio::test]
    async fn watch_catches_up_then_follows_live_writes_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("s.redb")).expect("opens");
        let r1 = s.put(Bucket::Functions, "t/a", b"1", Any).expect("put");
        s.put(Bucket::Tenants, "t", b"-", Any).expect("put");
        let mut w = s.watch(&[Bucket::Functions], 0);
        let WatchEvent::Change(c) = w.next().await.expect("event") else {
            panic!("history, not a snapshot");
        };
        assert_eq!((c.revision, c.key.as_str()), (r1, "t/a"));
        let writer = s.clone();
        let r3 = tokio::task::spawn_blocking(move || {
            writer
                .put(Bucket::Functions, "t/b", b"2", Any)
                .expect("put")
        })
        .await
        .expect("joins");
        let WatchEvent::Change(c) = w.next().await.expect("event") else {
            panic!("live change, not a snapshot");
        };
        assert_eq!((c.revision, c.key.as_str()), (r3, "t/b"));
        assert_eq!(w.revision(), r3);
    }

    /// The watch's next event, bounded: a watch that never announces would otherwise wait
    /// for a live change for ever.
    async fn next(w: &mut crate::store::Watch) -> WatchEvent {
        tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
            .await
            .expect("an event within 10 s")
            .expect("event")
    }

    #[tokio::test]
    async fn an_announcing_watch_says_when_it_has_caught_up_with_the_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("s.redb")).expect("opens");
        let r1 = s.put(Bucket::Functions, "t/a", b"1", Any).expect("put");
        // The history ends with a change the watch does not show: it is caught up all the
        // same, at the store's revision.
        let r2 = s.put(Bucket::Tenants, "t", b"-", Any).expect("put");
        let mut w = s.watch(&[Bucket::Functions], 0).announcing_current();
        let WatchEvent::Change(c) = next(&mut w).await else {
            panic!("history first");
        };
        assert_eq!(c.revision, r1);
        assert_eq!(next(&mut w).await, WatchEvent::Current(r2));
        // A watch that starts current says so at once.
        let mut w = s.watch(&[Bucket::Functions], r2).announcing_current();
        assert_eq!(next(&mut w).await, WatchEvent::Current(r2));
    }
}
