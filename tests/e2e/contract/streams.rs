//! The store contract for the log: appends, expected versions, atomic multi-stream appends,
//! malformed events, retried appends, reads with filters, racing appenders.

use super::*;

pub(super) async fn appends_and_reads_streams(store: Arc<dyn Store>) {
    let first = store
        .append(
            "acc-1",
            ExpectedVersion::NoStream,
            vec![event("Opened", 1), event("Deposited", 2)],
        )
        .await
        .expect("append");
    assert_eq!(
        (first.first_position, first.last_position, first.version),
        (1, 2, 2)
    );
    let second = store
        .append("acc-2", ExpectedVersion::Any, vec![event("Opened", 3)])
        .await
        .expect("append");
    assert_eq!((second.first_position, second.version), (3, 1));
    let third = store
        .append(
            "acc-1",
            ExpectedVersion::Exact(2),
            vec![event("Withdrawn", 4)],
        )
        .await
        .expect("append");
    assert_eq!((third.first_position, third.version), (4, 3));

    let stream = store
        .read_stream("acc-1", 1, 100)
        .await
        .expect("read stream");
    let versions: Vec<_> = stream
        .iter()
        .map(|e| (e.version, e.position, e.event_type.as_str()))
        .collect();
    assert_eq!(
        versions,
        vec![(1, 1, "Opened"), (2, 2, "Deposited"), (3, 4, "Withdrawn")]
    );
    assert_eq!(stream[0].data, r#"{"n":1}"#);
    assert_eq!(stream[0].metadata, r#"{"tenant":"t1"}"#);
    assert_eq!(
        store
            .read_stream("acc-1", 3, 100)
            .await
            .expect("read")
            .len(),
        1
    );
    assert_eq!(store.head().await.expect("head"), 4);
}

pub(super) async fn refuses_wrong_expected_versions(store: Arc<dyn Store>) {
    store
        .append("acc-1", ExpectedVersion::NoStream, vec![event("Opened", 1)])
        .await
        .expect("append");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(2),
    ] {
        match store
            .append("acc-1", expected, vec![event("Deposited", 2)])
            .await
        {
            Err(StoreError::Conflict {
                aggregate_id,
                actual,
                ..
            }) => assert_eq!((aggregate_id.as_str(), actual), ("acc-1", 1)),
            other => panic!("{expected}: expected a conflict, got {other:?}"),
        }
    }
    match store
        .append(
            "acc-new",
            ExpectedVersion::Exact(3),
            vec![event("Opened", 1)],
        )
        .await
    {
        Err(StoreError::Conflict { actual: 0, .. }) => {}
        other => panic!("expected a conflict on a missing stream, got {other:?}"),
    }
    assert_eq!(
        store.head().await.expect("head"),
        1,
        "a refused append stores nothing"
    );
}

pub(super) async fn multi_stream_appends_are_atomic(store: Arc<dyn Store>) {
    store
        .append("acc-1", ExpectedVersion::NoStream, vec![event("Opened", 1)])
        .await
        .expect("append");
    let appends = vec![
        StreamAppend {
            aggregate_id: "acc-2".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event("Opened", 2)],
        },
        StreamAppend {
            aggregate_id: "acc-1".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event("Opened", 3)],
        },
    ];
    assert!(matches!(
        store.append_all(appends).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.head().await.expect("head"), 1);
    assert!(
        store
            .read_stream("acc-2", 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
}

pub(super) async fn refuses_malformed_events(store: Arc<dyn Store>) {
    let mut bad = event("Opened", 1);
    bad.event_data = json!([1, 2]);
    assert!(matches!(
        store.append("acc-1", ExpectedVersion::Any, vec![bad]).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store
            .append("", ExpectedVersion::Any, vec![event("Opened", 1)])
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.append("acc-1", ExpectedVersion::Any, vec![]).await,
        Err(StoreError::InvalidInput(_))
    ));
    let mut empty_type = event("", 1);
    empty_type.aggregate_type = "Account".into();
    assert!(matches!(
        store
            .append("acc-1", ExpectedVersion::Any, vec![empty_type])
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    for long in [
        event(&"E".repeat(257), 1),
        NewEvent {
            aggregate_type: "A".repeat(257),
            ..event("Opened", 1)
        },
    ] {
        match store
            .append("acc-1", ExpectedVersion::Any, vec![long])
            .await
        {
            Err(StoreError::InvalidInput(message)) => {
                assert!(message.contains("at most 256 are allowed"), "{message}")
            }
            other => panic!("a type name of 257 bytes must be refused: {other:?}"),
        }
    }
    assert_eq!(store.head().await.expect("head"), 0);
}

pub(super) async fn retried_appends_are_recognised_by_their_event_ids(store: Arc<dyn Store>) {
    let with_id = |event_type: &str, id: &str| NewEvent {
        id: Some(id.into()),
        ..event(event_type, 1)
    };
    let first = store
        .append(
            "acc-1",
            ExpectedVersion::NoStream,
            vec![with_id("Opened", "e-1"), with_id("Deposited", "e-2")],
        )
        .await
        .expect("first append");
    store
        .append("acc-2", ExpectedVersion::Any, vec![event("Opened", 1)])
        .await
        .expect("another stream");
    // The client lost the answer and sends the same append again: same answer, nothing written,
    // although the expected version no longer holds.
    let again = store
        .append(
            "acc-1",
            ExpectedVersion::NoStream,
            vec![with_id("Opened", "e-1"), with_id("Deposited", "e-2")],
        )
        .await
        .expect("retried append");
    assert_eq!(again, first);
    assert_eq!(store.head().await.expect("head"), 3);
    // In a multi-stream append, the retried part writes nothing and the new part is appended.
    let results = store
        .append_all(vec![
            StreamAppend {
                aggregate_id: "acc-1".into(),
                expected: ExpectedVersion::Exact(0),
                events: vec![with_id("Opened", "e-1"), with_id("Deposited", "e-2")],
            },
            StreamAppend {
                aggregate_id: "acc-1".into(),
                expected: ExpectedVersion::Exact(2),
                events: vec![with_id("Withdrawn", "e-3")],
            },
        ])
        .await
        .expect("retry with a new part");
    assert_eq!(results[0], first);
    assert_eq!((results[1].first_position, results[1].version), (4, 3));
    assert_eq!(store.head().await.expect("head"), 4);
    // A part of a stored append, in order, is stored too.
    let part = store
        .append(
            "acc-1",
            ExpectedVersion::Any,
            vec![with_id("Deposited", "e-2")],
        )
        .await
        .expect("part");
    assert_eq!((part.first_position, part.version), (2, 2));
    // Anything else reusing an id is refused, naming the id, and writes nothing.
    for (stream, events) in [
        (
            "acc-3",
            vec![with_id("Opened", "e-1"), with_id("Deposited", "e-2")],
        ),
        (
            "acc-1",
            vec![with_id("Deposited", "e-2"), with_id("Opened", "e-1")],
        ),
        (
            "acc-1",
            vec![with_id("Opened", "e-1"), with_id("Closed", "e-9")],
        ),
        (
            "acc-1",
            vec![with_id("Closed", "e-1"), with_id("Deposited", "e-2")],
        ),
        // The same ids, types and order with another payload: not the append that was stored.
        (
            "acc-1",
            vec![
                with_id("Opened", "e-1"),
                NewEvent {
                    event_data: json!({ "amount": 999 }),
                    ..with_id("Deposited", "e-2")
                },
            ],
        ),
        (
            "acc-1",
            vec![NewEvent {
                metadata: json!({ "userId": "someone-else" }),
                ..with_id("Opened", "e-1")
            }],
        ),
        (
            "acc-1",
            vec![NewEvent {
                aggregate_type: "Other".into(),
                ..with_id("Opened", "e-1")
            }],
        ),
    ] {
        match store.append(stream, ExpectedVersion::Any, events).await {
            Err(StoreError::InvalidInput(message)) => {
                assert!(message.contains("event id `e-"), "{message}")
            }
            other => panic!("reused ids on {stream} must be refused: {other:?}"),
        }
    }
    assert_eq!(store.head().await.expect("head"), 4);
    let stream = store.read_stream("acc-1", 1, 100).await.expect("read");
    let ids: Vec<_> = stream.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e-1", "e-2", "e-3"]);
}

pub(super) async fn reads_all_with_filters(store: Arc<dyn Store>) {
    for i in 1..=10 {
        let kind = if i % 3 == 0 { "Rare" } else { "Common" };
        store
            .append(
                &format!("acc-{i}"),
                ExpectedVersion::NoStream,
                vec![event(kind, i)],
            )
            .await
            .expect("append");
    }
    let rare = EventFilter {
        event_types: vec!["Rare".into()],
        aggregate_types: vec![],
    };
    let page = store.read_all(0, 2, &rare).await.expect("read");
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![3, 6]
    );
    assert_eq!(
        page.scanned_to, 6,
        "a full page has scanned up to its last event"
    );
    let page = store.read_all(6, 2, &rare).await.expect("read");
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![9]
    );
    assert_eq!(
        page.scanned_to, 10,
        "a short page has scanned up to the head"
    );
    let none = EventFilter {
        event_types: vec![],
        aggregate_types: vec!["Other".into()],
    };
    let page = store.read_all(0, 100, &none).await.expect("read");
    assert!(page.events.is_empty());
    assert_eq!(page.scanned_to, 10);
}

/// Many writers race for the same stream: exactly one wins each version, the others get a
/// conflict, and a reader paging the log never sees a gap.
pub(super) async fn concurrent_appenders_never_leave_gaps(store: Arc<dyn Store>) {
    const WRITERS: u64 = 8;
    const ATTEMPTS: u64 = 40;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        tokio::spawn(async move {
            let mut observations = 0;
            while !done.load(Ordering::Relaxed) {
                let page = store
                    .read_all(0, 100_000, &EventFilter::default())
                    .await
                    .expect("read");
                for (i, event) in page.events.iter().enumerate() {
                    assert_eq!(event.position, i as u64 + 1, "gap seen by a reader");
                }
                assert_eq!(page.scanned_to, page.events.len() as u64);
                observations += 1;
                tokio::task::yield_now().await;
            }
            observations
        })
    };
    let conflicts = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, conflicts) = (Arc::clone(&store), Arc::clone(&conflicts));
            tokio::spawn(async move {
                let mut wins = Vec::new();
                for attempt in 0..ATTEMPTS {
                    let current = store
                        .read_stream("hot", 1, 100_000)
                        .await
                        .expect("read")
                        .len() as u64;
                    let expected = if current == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(current)
                    };
                    // Other streams in between keep the global log interleaved.
                    store
                        .append(
                            &format!("side-{w}-{attempt}"),
                            ExpectedVersion::NoStream,
                            vec![event("Side", w)],
                        )
                        .await
                        .expect("side");
                    match store
                        .append("hot", expected, vec![event("Hot", w * 1000 + attempt)])
                        .await
                    {
                        Ok(result) => wins.push(result.version),
                        Err(StoreError::Conflict { .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                wins
            })
        })
        .collect();
    let mut versions = Vec::new();
    for writer in writers {
        versions.extend(writer.await.expect("writer"));
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.await.expect("reader") > 0);

    versions.sort_unstable();
    let stream = store.read_stream("hot", 1, 100_000).await.expect("read");
    assert_eq!(
        versions,
        (1..=stream.len() as u64).collect::<Vec<_>>(),
        "each version won exactly once"
    );
    assert_eq!(
        stream.len() as u64 + conflicts.load(Ordering::Relaxed),
        WRITERS * ATTEMPTS
    );
    let head = store.head().await.expect("head");
    assert_eq!(head, WRITERS * ATTEMPTS + stream.len() as u64);
    let ids: HashSet<_> = store
        .read_all(0, 100_000, &EventFilter::default())
        .await
        .expect("read")
        .events
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len() as u64, head, "event ids are unique");
}
