//! The backend-agnostic contract of [`Backend`](super::Backend), as checks over a
//! [`Store`]; every backend's tests run all of them (redb here, JetStream against a real
//! `nats-server`).

use super::Expect::{Absent, Any, Revision};
use super::{
    Bucket, History, JetStreamBackend, JetStreamConfig, Op, Store, StoreError, StreamMessage,
    WatchEvent,
};
use common::model::ArtifactDigest;
use std::time::Duration;

/// Every check, each on a fresh store from `fresh`.
pub(super) fn run_all(fresh: &mut dyn FnMut() -> Store) {
    conditional_writes(&fresh());
    list_and_delete(&fresh());
    list_pages(&fresh());
    blobs(&fresh());
    history_and_snapshot(&fresh());
    streams(&fresh());
    bounds_per_append(&fresh());
    watch(&fresh());
    every_bucket(&fresh());
}

fn conditional_writes(s: &Store) {
    let r1 = s
        .put(Bucket::Functions, "t/a", b"1", Absent)
        .expect("create");
    assert!(matches!(
        s.put(Bucket::Functions, "t/a", b"2", Absent),
        Err(StoreError::Conflict { .. })
    ));
    let r2 = s
        .put(Bucket::Functions, "t/a", b"2", Revision(r1))
        .expect("update");
    assert!(r2 > r1);
    assert!(matches!(
        s.put(Bucket::Functions, "t/a", b"3", Revision(r1)),
        Err(StoreError::Conflict { .. })
    ));
    let e = s
        .get(Bucket::Functions, "t/a")
        .expect("get")
        .expect("present");
    assert_eq!((e.value.as_slice(), e.revision), (&b"2"[..], r2));
    assert_eq!(s.revision().expect("revision"), r2);
    // The same key in another bucket is another key.
    assert!(s.get(Bucket::Aliases, "t/a").expect("get").is_none());
    // Deleted, a key is absent again: creatable, and not updatable at its old revision.
    assert!(
        s.delete(Bucket::Functions, "t/a", Revision(r2))
            .expect("delete")
    );
    assert!(s.put(Bucket::Functions, "t/a", b"x", Revision(r2)).is_err());
    s.put(Bucket::Functions, "t/a", b"4", Absent)
        .expect("re-create");
    // Keys with characters a subject cannot hold.
    s.put(Bucket::Routes, "GET example.com/a b*>", b"r", Absent)
        .expect("odd key");
    let odd = s.get(Bucket::Routes, "GET example.com/a b*>").expect("get");
    assert_eq!(odd.map(|e| e.value), Some(b"r".to_vec()));
}

fn list_and_delete(s: &Store) {
    for k in ["a/x", "a/y", "ab/z", "b/z"] {
        s.put(Bucket::Functions, k, b"v", Any).expect("put");
    }
    s.put(Bucket::Versions, "a/v", b"v", Any).expect("put");
    let keys = |p: &str| -> Vec<String> {
        s.list(Bucket::Functions, p)
            .expect("list")
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("a/"), ["a/x", "a/y"]);
    assert_eq!(keys(""), ["a/x", "a/y", "ab/z", "b/z"]);
    assert!(matches!(
        s.delete(Bucket::Functions, "a/x", Revision(1_000_000)),
        Err(StoreError::Conflict { .. })
    ));
    assert!(s.delete(Bucket::Functions, "a/x", Any).expect("delete"));
    assert!(!s.delete(Bucket::Functions, "a/x", Any).expect("again"));
    assert!(s.get(Bucket::Functions, "a/x").expect("get").is_none());
    assert_eq!(keys("a/"), ["a/y"]);
}

fn list_pages(s: &Store) {
    for k in ["p/a", "p/b", "p/c", "q/a"] {
        s.put(Bucket::State, k, b"v", Any).expect("put");
    }
    let keys = |after: &str, max| -> Vec<String> {
        s.list_page(Bucket::State, "p/", after, max)
            .expect("page")
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("", 2), ["p/a", "p/b"]);
    assert_eq!(keys("p/b", 2), ["p/c"]);
    assert_eq!(keys("p/c", 2), Vec::<String>::new());
    assert_eq!(keys("", 0), Vec::<String>::new());
}

fn blobs(s: &Store) {
    let d = s.put_blob(b"module").expect("put");
    assert_eq!(d, ArtifactDigest::of(b"module"));
    assert_eq!(s.put_blob(b"module").expect("idempotent"), d);
    assert_eq!(s.get_blob(&d).expect("get"), Some(b"module".to_vec()));
    // Larger than one NATS message chunk, so the object store splits it.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = s.put_blob(&big).expect("put big");
    assert_eq!(s.get_blob(&d).expect("get big"), Some(big));
    assert_eq!(s.get_blob(&ArtifactDigest::of(b"nope")).expect("get"), None);
    // A deleted blob is gone, another stays, and deleting twice says it was not there.
    let small = ArtifactDigest::of(b"module");
    assert!(s.delete_blob(&small).expect("delete"));
    assert_eq!(s.get_blob(&small).expect("get"), None);
    assert!(!s.delete_blob(&small).expect("delete again"));
    assert!(s.get_blob(&d).expect("get big").is_some());
    assert_eq!(s.put_blob(b"module").expect("put again"), small);
    assert_eq!(s.get_blob(&small).expect("get"), Some(b"module".to_vec()));
}

fn history_and_snapshot(s: &Store) {
    let r1 = s.put(Bucket::Functions, "t/a", b"1", Any).expect("put");
    let r2 = s.put(Bucket::Tenants, "t", b"-", Any).expect("put");
    let r3 = s
        .backend
        .delete(Bucket::Functions, "t/a", Any)
        .expect("delete")
        .expect("existed");
    let r4 = s.put(Bucket::Aliases, "t/a/prod", b"x", Any).expect("put");
    assert!(r1 < r2 && r2 < r3 && r3 < r4);
    let History::Changes(h) = s.backend.history(0, 10).expect("history") else {
        panic!("not compacted");
    };
    let ops: Vec<_> = h
        .iter()
        .map(|c| (c.revision, c.bucket, c.op.clone()))
        .collect();
    // A backend may skip the put that the delete superseded; the rest is exact.
    let tail = &ops[ops.len() - 3..];
    assert_eq!(
        tail,
        [
            (r2, Bucket::Tenants, Op::Put(b"-".to_vec())),
            (r3, Bucket::Functions, Op::Delete),
            (r4, Bucket::Aliases, Op::Put(b"x".to_vec())),
        ]
    );
    let History::Changes(after) = s.backend.history(r3, 10).expect("history") else {
        panic!("not compacted");
    };
    assert_eq!(after.iter().map(|c| c.revision).collect::<Vec<_>>(), [r4]);
    let History::Changes(page) = s.backend.history(0, 1).expect("history") else {
        panic!("not compacted");
    };
    assert_eq!(page.len(), 1);
    let snap = s
        .snapshot(&[Bucket::Tenants, Bucket::Aliases])
        .expect("snapshot");
    assert_eq!(snap.revision, r4);
    let keys: Vec<_> = snap
        .entries
        .iter()
        .map(|(b, k, _)| (*b, k.as_str()))
        .collect();
    assert_eq!(
        keys,
        [(Bucket::Tenants, "t"), (Bucket::Aliases, "t/a/prod")]
    );
}

fn streams(s: &Store) {
    assert_eq!(s.read("q", 0, 10).expect("read nothing"), []);
    assert!(!s.ack("q", 1).expect("ack nothing"));
    assert_eq!(s.append("q", b"a", 2).expect("append"), 1);
    assert_eq!(s.append("q", b"b", 2).expect("append"), 2);
    assert!(matches!(
        s.append("q", b"c", 2),
        Err(StoreError::StreamFull { max: 2, .. })
    ));
    assert_eq!(s.append("other/q", b"x", 2).expect("append"), 1);
    let msgs = s.read("q", 2, 10).expect("read");
    assert_eq!(
        msgs,
        [StreamMessage {
            seq: 2,
            value: b"b".to_vec()
        }]
    );
    assert!(s.ack("q", 1).expect("ack"));
    assert!(!s.ack("q", 1).expect("ack twice"));
    assert_eq!(s.append("q", b"c", 2).expect("room again"), 3);
    let seqs: Vec<_> = s
        .read("q", 0, 10)
        .expect("read")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(s.read("q", 0, 1).expect("read one").len(), 1);
}

/// The bound is the caller's, per append (the async queue appends device events under one
/// bound and its own retries under a larger one): a smaller bound than the stream holds
/// refuses that append and never drops a message already appended.
fn bounds_per_append(s: &Store) {
    for v in [b"a", b"b", b"c"] {
        s.append("q", v, 10).expect("append under the large bound");
    }
    assert!(matches!(
        s.append("q", b"d", 2),
        Err(StoreError::StreamFull { max: 2, .. })
    ));
    let kept: Vec<_> = s
        .read("q", 0, 10)
        .expect("read")
        .into_iter()
        .map(|m| m.value)
        .collect();
    assert_eq!(kept, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(
        s.append("q", b"d", 10).expect("the large bound has room"),
        4
    );
    assert_eq!(s.append("q", b"e", 5).expect("under the small bound"), 5);
    assert!(matches!(
        s.append("q", b"f", 5),
        Err(StoreError::StreamFull { max: 5, .. })
    ));
    assert_eq!(s.read("q", 0, 10).expect("read").len(), 5);
}

fn watch(s: &Store) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let r1 = s.put(Bucket::Functions, "t/a", b"1", Any).expect("put");
    s.put(Bucket::Tenants, "t", b"-", Any).expect("put");
    let mut w = rt.block_on(async { s.watch(&[Bucket::Functions], 0) });
    let next = |w: &mut super::Watch| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .expect("an event in time")
                .expect("event")
        })
    };
    let WatchEvent::Change(c) = next(&mut w) else {
        panic!("history, not a snapshot");
    };
    assert_eq!((c.revision, c.key.as_str()), (r1, "t/a"));
    let r3 = s.put(Bucket::Functions, "t/b", b"2", Any).expect("put");
    let WatchEvent::Change(c) = next(&mut w) else {
        panic!("live change, not a snapshot");
    };
    assert_eq!((c.revision, c.key.as_str()), (r3, "t/b"));
    assert_eq!(w.revision(), r3);
}

/// Every bucket (the tenant limit overrides of [`Bucket::Limits`] included) is its own
/// keyspace: written, read, listed, snapshotted, deleted and watched on its own.
fn every_bucket(s: &Store) {
    for b in Bucket::ALL {
        s.put(b, "acme", &[b.code()], Absent).expect("put");
    }
    for b in Bucket::ALL {
        let e = s.get(b, "acme").expect("get").expect("present");
        assert_eq!(e.value, [b.code()], "{b:?}");
        let listed = s.list(b, "").expect("list");
        assert_eq!(listed.len(), 1, "{b:?}");
    }
    let snap = s.snapshot(&[Bucket::Limits]).expect("snapshot");
    assert_eq!(snap.entries.len(), 1);
    assert_eq!(snap.entries[0].0, Bucket::Limits);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut w = rt.block_on(async { s.watch(&[Bucket::Limits], snap.revision) });
    assert!(s.delete(Bucket::Limits, "acme", Any).expect("delete"));
    assert!(s.get(Bucket::Limits, "acme").expect("get").is_none());
    assert!(s.get(Bucket::Canary, "acme").expect("get").is_some());
    let event = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an event in time")
            .expect("event")
    });
    let WatchEvent::Change(c) = event else {
        panic!("a change, not a snapshot");
    };
    assert_eq!(
        (c.bucket, c.key.as_str(), c.op),
        (Bucket::Limits, "acme", Op::Delete)
    );
}

/// A JetStream store on `url` with `prefix`, answering within a test-friendly deadline.
pub(super) fn jetstream(url: &str, prefix: &str) -> Result<Store, StoreError> {
    JetStreamBackend::connect(&JetStreamConfig {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        timeout: Duration::from_secs(10),
    })
    .map(Store::with_backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jetstream::nats_server::NatsServer;

    #[test]
    fn redb_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = 0;
        run_all(&mut || {
            n += 1;
            Store::open(&dir.path().join(format!("s{n}.redb"))).expect("opens")
        });
    }

    #[ignore = "needs nats-server"]
    #[test]
    fn jetstream_passes_the_conformance_suite() {
        let server = NatsServer::start().expect("nats-server starts");
        let mut n = 0;
        run_all(&mut || {
            n += 1;
            jetstream(&server.url(), &format!("c{n}")).expect("connects")
        });
    }

    #[ignore = "needs nats-server"]
    #[test]
    fn two_jetstream_stores_on_one_server_share_state_and_changes() {
        let server = NatsServer::start().expect("nats-server starts");
        let a = jetstream(&server.url(), "shared").expect("a connects");
        let b = jetstream(&server.url(), "shared").expect("b connects");
        let other = jetstream(&server.url(), "other").expect("other connects");
        let mut live = b.backend.subscribe();
        let r = a
            .put(Bucket::Functions, "t/f", b"v1", Absent)
            .expect("put at a");
        let seen = b
            .get(Bucket::Functions, "t/f")
            .expect("get at b")
            .expect("present");
        assert_eq!((seen.value.as_slice(), seen.revision), (&b"v1"[..], r));
        assert!(matches!(
            b.put(Bucket::Functions, "t/f", b"v2", Absent),
            Err(StoreError::Conflict { .. })
        ));
        assert!(other.get(Bucket::Functions, "t/f").expect("get").is_none());
        let change = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), live.recv()).await })
            .expect("in time")
            .expect("a change");
        assert_eq!((change.revision, change.key.as_str()), (r, "t/f"));
        a.append("events", b"e1", 10).expect("append at a");
        let msgs = b.read("events", 0, 10).expect("read at b");
        assert_eq!(
            msgs.iter().map(|m| m.value.as_slice()).collect::<Vec<_>>(),
            [b"e1"]
        );
        assert!(b.ack("events", msgs[0].seq).expect("ack at b"));
        assert_eq!(a.read("events", 0, 10).expect("read at a"), []);
    }

    #[test]
    fn an_unreachable_server_is_a_typed_error_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = format!("nats://127.0.0.1:{port}");
        let err = jetstream(&url, "x").expect_err("nothing listens there");
        assert!(
            matches!(&err, StoreError::Backend(m) if m.contains(&url)),
            "{err}"
        );
        let err = jetstream(&url, "bad.prefix").expect_err("refused");
        assert!(err.to_string().contains("prefix"), "{err}");
    }
}
