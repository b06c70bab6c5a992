//! Opening the queue from its streams, DLQ paging and a full queue, against a real redb
//! store.

use super::record::LEGACY_DLQ_STREAM;
use super::*;
use common::model::{FunctionName, Qualifier, TenantId};

fn event(id: &str, attempts: u32, due: u64) -> EventRecord {
    EventRecord {
        request_id: id.into(),
        kind: EventKind::Invocation,
        tenant: TenantId::new("t").expect("tenant"),
        function: FunctionName::new("f").expect("name"),
        qualifier: Qualifier::Latest,
        payload: b"p".to_vec(),
        enqueued_at_ms: 1,
        attempts,
        first_attempt_ms: None,
        last_attempt_ms: None,
        next_attempt_ms: due,
        last_error: None,
        version: None,
    }
}

fn append(store: &Store, e: &EventRecord) -> u64 {
    let bytes = serde_json::to_vec(e).expect("encode");
    store.append(EVENTS_STREAM, &bytes, 100).expect("append")
}

#[test]
fn reopening_keeps_every_event_and_the_newer_copy_of_a_torn_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.redb")).expect("store");
    let a = append(&store, &event("a", 0, 10));
    // A crash between appending attempt 1 of `b` and acking attempt 0 left both.
    let _b0 = append(&store, &event("b", 0, 10));
    let b1 = append(&store, &event("b", 1, 20));
    // A control event of `a` is a different event with the same request id.
    let mut control = event("a", 0, 30);
    control.kind = EventKind::OnFailure;
    let c = append(&store, &control);
    store
        .append(EVENTS_STREAM, b"not json", 100)
        .expect("append");
    let letter = DeadLetter::of(
        &event("d", 1, 1),
        FailureCause {
            kind: "k".into(),
            message: "m".into(),
        },
        "r",
    );
    let letter = serde_json::to_vec(&letter).expect("encode");
    store
        .append(LEGACY_DLQ_STREAM, &letter, 100)
        .expect("append");
    store
        .put(
            crate::store::Bucket::Tenants,
            "t",
            b"{}",
            crate::store::Expect::Any,
        )
        .expect("tenant");

    let events = Events::open(store.clone(), EventsConfig::default()).expect("opens");
    let schedule: Vec<(u64, u64)> = events.lock().iter().copied().collect();
    assert_eq!(schedule, vec![(10, a), (20, b1), (30, c)]);
    assert_eq!(events.queue_depth(), 3);
    assert_eq!(
        events.dlq_depth(),
        1,
        "the legacy dead letter moved to its tenant"
    );
    let t = TenantId::new("t").expect("tenant");
    assert_eq!(store.read(LEGACY_DLQ_STREAM, 1, 10).expect("read"), []);
    assert_eq!(store.read(&dlq_stream(&t), 1, 10).expect("read").len(), 1);
    assert_eq!(
        events.tenant_bytes(&t),
        (3, 1),
        "three live events of 1 byte; the dead letter of 1"
    );
    let left: Vec<u64> = store
        .read(EVENTS_STREAM, 1, 100)
        .expect("read")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        left.len(),
        4,
        "the stale copy is acked, the unreadable one kept"
    );
    assert!(!left.contains(&2));
}

#[test]
fn a_dlq_page_stops_at_its_payload_bytes_and_the_next_page_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.redb")).expect("store");
    let t = TenantId::new("t").expect("tenant");
    let mut big = event("a", 1, 1);
    big.payload = vec![7; 3 << 20];
    let cause = FailureCause {
        kind: "k".into(),
        message: "m".into(),
    };
    for _ in 0..5 {
        let letter = serde_json::to_vec(&DeadLetter::of(&big, cause.clone(), "r")).expect("encode");
        store.append(&dlq_stream(&t), &letter, 100).expect("append");
    }
    let events = Events::open(store, EventsConfig::default()).expect("opens");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let first = events.dlq_list(t.clone(), 0, 100).await.expect("lists");
        assert_eq!(
            first.items.len(),
            3,
            "3 x 3 MiB reaches the 8 MiB page bound"
        );
        let next = first.next.expect("a next page");
        let second = events.dlq_list(t.clone(), next, 100).await.expect("lists");
        assert_eq!(second.items.len(), 2);
        assert_eq!(second.next, None);
        let small = events.dlq_list(t.clone(), 0, 2).await.expect("lists");
        assert_eq!(
            (small.items.len(), small.next),
            (2, Some(2)),
            "limit still applies"
        );
    });
}

#[test]
fn a_full_queue_refuses_with_throttled_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.redb")).expect("store");
    let config = EventsConfig {
        max_queued: 1,
        ..EventsConfig::default()
    };
    let events = Events::open(store, config).expect("opens");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        events.enqueue(event("a", 0, 1)).await.expect("first fits");
        let err = events.enqueue(event("b", 0, 1)).await.expect_err("full");
        assert_eq!(err.kind, ErrorKind::Throttled);
        assert!(err.retry_after.is_some());
    });
    assert_eq!(events.queue_depth(), 1);
}
