//! The store contract: behaviour every store must have, written once and run against each
//! backend (the embedded store here; MongoDB joins through the same functions).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use refold::domain::{
    CollectionSpec, EventFilter, ExpectedVersion, Generation, GenerationState, Manifest, NewEvent,
};
use refold::store::{BatchWrites, DeadLetter, Query, Store, StoreError, StreamAppend};
use refold_tests::Sandbox;
use serde_json::json;

use crate::contract_dead_letters::dead_letters_are_read_a_page_at_a_time;
use crate::contract_unique::unique_indexes_mean_the_same_on_both_stores;

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent {
        id: None,
        aggregate_type: "Account".into(),
        event_type: event_type.into(),
        event_data: json!({ "n": n }),
        metadata: json!({ "tenant": "t1" }),
        timestamp_ms: None,
    }
}

async fn appends_and_reads_streams(store: Arc<dyn Store>) {
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

async fn refuses_wrong_expected_versions(store: Arc<dyn Store>) {
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

async fn multi_stream_appends_are_atomic(store: Arc<dyn Store>) {
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

async fn refuses_malformed_events(store: Arc<dyn Store>) {
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

async fn retried_appends_are_recognised_by_their_event_ids(store: Arc<dyn Store>) {
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

async fn reads_all_with_filters(store: Arc<dyn Store>) {
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
async fn concurrent_appenders_never_leave_gaps(store: Arc<dyn Store>) {
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

/// A batch commit moves the checkpoint only from the expected value, with its writes, or not at all.
async fn batch_commits_are_guarded_by_the_checkpoint(store: Arc<dyn Store>) {
    let manifest = Manifest {
        name: "ledger".into(),
        version: 1,
        event_types: vec![],
        aggregate_types: vec![],
        collections: vec![CollectionSpec {
            name: "balances".into(),
            indexes: vec![],
        }],
        batch_size: None,
        failure_policy: None,
    };
    let generation = store
        .create_generation(&manifest, "hash-1")
        .await
        .expect("create generation");
    assert_eq!((generation.number, generation.checkpoint), (1, 0));
    let doc = |v: i64| {
        let serde_json::Value::Object(map) = json!({ "_id": "a", "balance": v }) else {
            unreachable!()
        };
        Some(Arc::new(map))
    };
    let writes = BatchWrites {
        documents: vec![("balances".into(), "a".into(), doc(10))],
        ..BatchWrites::default()
    };
    store
        .commit(&generation, writes, 0, 5)
        .await
        .expect("commit");
    let stale = BatchWrites {
        documents: vec![("balances".into(), "a".into(), doc(99))],
        ..BatchWrites::default()
    };
    assert!(matches!(
        store.commit(&generation, stale, 0, 7).await,
        Err(StoreError::CheckpointMoved { found: 5, .. })
    ));
    // Readers serve host calls on the handler's blocking thread.
    let mut reader = store.reader(&generation).expect("reader");
    let balance = tokio::task::spawn_blocking(move || {
        reader
            .get("balances", "a")
            .expect("get")
            .map(|d| d["balance"].clone())
    });
    assert_eq!(balance.await.expect("reader thread"), Some(json!(10)));

    // Not visible under the stable name until activated.
    assert!(store.get_document("ledger", "balances", "a").await.is_err());
    store
        .activate(&generation, GenerationState::Retired)
        .await
        .expect("activate");
    assert_eq!(
        store
            .get_document("ledger", "balances", "a")
            .await
            .expect("get"),
        Some(json!({ "_id": "a", "balance": 10 }))
    );
    let generations = store.generations("ledger").await.expect("generations");
    assert_eq!(generations[0].checkpoint, 5);

    let deletion = BatchWrites {
        documents: vec![("balances".into(), "a".into(), None)],
        ..BatchWrites::default()
    };
    store
        .commit(&generation, deletion, 5, 6)
        .await
        .expect("commit");
    assert_eq!(
        store
            .get_document("ledger", "balances", "a")
            .await
            .expect("get"),
        None
    );
}

fn ledger(collections: &[&str]) -> Manifest {
    Manifest {
        name: "ledger".into(),
        version: 1,
        event_types: vec![],
        aggregate_types: vec![],
        collections: collections
            .iter()
            .map(|name| CollectionSpec {
                name: (*name).into(),
                indexes: vec![],
            })
            .collect(),
        batch_size: None,
        failure_policy: None,
    }
}

/// Commit documents, `(collection, document)` with an `_id`, as a generation's first batch.
async fn commit_first(
    store: &Arc<dyn Store>,
    generation: &Generation,
    docs: impl IntoIterator<Item = (String, serde_json::Value)>,
) {
    let documents = docs
        .into_iter()
        .map(|(collection, doc)| {
            let serde_json::Value::Object(map) = doc else {
                unreachable!("documents are objects")
            };
            let id = map["_id"].as_str().unwrap_or_default().to_owned();
            (collection, id, Some(Arc::new(map)))
        })
        .collect();
    let writes = BatchWrites {
        documents,
        ..BatchWrites::default()
    };
    store
        .commit(generation, writes, 0, 1)
        .await
        .expect("commit");
}

/// A generation holding one document `{"_id": "a", "gen": <its number>}` in each collection.
async fn filled_generation(store: &Arc<dyn Store>, manifest: &Manifest) -> Generation {
    let generation = store
        .create_generation(manifest, "hash")
        .await
        .expect("create generation");
    let docs = manifest.collections.iter().map(|c| {
        (
            c.name.clone(),
            json!({ "_id": "a", "gen": generation.number }),
        )
    });
    commit_first(store, &generation, docs).await;
    generation
}

/// A skipped event's dead letter commits in the batch that moves the checkpoint past it, or not
/// at all: a commit the checkpoint guard refuses records none.
async fn dead_letters_commit_with_their_checkpoint(store: Arc<dyn Store>) {
    let generation = store
        .create_generation(&ledger(&["entries"]), "hash")
        .await
        .expect("create generation");
    let letter = |position| DeadLetter {
        projection: "ledger".into(),
        generation: generation.number,
        version: 1,
        position,
        event_id: format!("event-{position}"),
        event_type: "Tick".into(),
        aggregate_id: "thing-1".into(),
        error: "projection reported invalid-event error".into(),
        attempts: 3,
        at_ms: 1_740_000_000_000,
        retry_requested: false,
    };
    let writes = |position| BatchWrites {
        dead_letters: vec![letter(position)],
        ..BatchWrites::default()
    };
    store
        .commit(&generation, writes(1), 0, 1)
        .await
        .expect("commit with a dead letter");
    let refused = store.commit(&generation, writes(2), 0, 2).await;
    assert!(
        matches!(refused, Err(StoreError::CheckpointMoved { .. })),
        "{refused:?}"
    );
    let letters = store.dead_letters(Some("ledger")).await.expect("read");
    assert_eq!(letters, [letter(1)]);
}

/// Dead letters are counted per projection, and those to re-drive found for one generation, by
/// the store: a status page and a projector's poll load no other letter.
async fn dead_letters_are_counted_and_found_by_the_store(store: Arc<dyn Store>) {
    let letter = |projection: &str, generation, position, retry_requested| DeadLetter {
        projection: projection.into(),
        generation,
        version: 1,
        position,
        event_id: format!("event-{position}"),
        event_type: "Tick".into(),
        aggregate_id: "thing-1".into(),
        error: "failed".into(),
        attempts: 3,
        at_ms: 1_740_000_000_000,
        retry_requested,
    };
    let letters = [
        letter("ledger", 1, 9, true),
        letter("ledger", 1, 4, true),
        letter("ledger", 1, 5, false),
        letter("ledger", 2, 4, true),
        letter("audit", 1, 7, false),
    ];
    for l in &letters {
        store.record_dead_letter(l).await.expect("record");
    }
    let counts = store.count_dead_letters().await.expect("count");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("audit".to_owned(), 1), ("ledger".to_owned(), 4)]
    );
    let wanted = store
        .dead_letters_to_redrive("ledger", 1)
        .await
        .expect("find");
    assert_eq!(wanted, [letters[1].clone(), letters[0].clone()]);
    assert!(
        store
            .dead_letters_to_redrive("audit", 1)
            .await
            .expect("find")
            .is_empty()
    );
}

/// A generation abandoned while it was building is never served: its activation is refused, and
/// the stable names keep pointing at the active generation. (Its projector may still reach the
/// head after the supervisor abandoned it.)
async fn abandoned_generations_are_never_activated(store: Arc<dyn Store>) {
    let manifest = ledger(&["entries"]);
    let first = filled_generation(&store, &manifest).await;
    store
        .activate(&first, GenerationState::Retired)
        .await
        .expect("first cut-over");
    // Abandoning is a compare-and-set on a building generation: the active one stays in service,
    // and no other state is set that way.
    assert!(
        !store
            .set_state(&first, GenerationState::Abandoned)
            .await
            .expect("abandon the active generation")
    );
    let second = filled_generation(&store, &manifest).await;
    assert!(matches!(
        store.set_state(&second, GenerationState::Active).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(
        store
            .set_state(&second, GenerationState::Abandoned)
            .await
            .expect("abandon")
    );
    let refused = store.activate(&second, GenerationState::Retired).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(ref m)) if m.contains("abandoned")),
        "{refused:?}"
    );
    let states: Vec<GenerationState> = store
        .generations("ledger")
        .await
        .expect("generations")
        .iter()
        .map(|g| g.state)
        .collect();
    assert_eq!(
        states,
        [GenerationState::Active, GenerationState::Abandoned]
    );
    let served = store
        .get_document("ledger", "entries", "a")
        .await
        .expect("read");
    assert_eq!(served.map(|d| d["gen"].clone()), Some(json!(first.number)));
}

/// Cut-overs and rollbacks move the stable names and the states together; stable names of
/// collections the new active generation lacks disappear; refusals are recorded and cleared.
async fn generations_cut_over_and_roll_back(store: Arc<dyn Store>) {
    let gen_of = |store: Arc<dyn Store>, collection: &'static str| async move {
        store
            .get_document("ledger", collection, "a")
            .await
            .map(|d| d.map(|d| d["gen"].clone()))
    };
    let first = filled_generation(&store, &ledger(&["balances", "audit"])).await;
    assert_eq!(first.collections, ["balances", "audit"]);
    store
        .activate(&first, GenerationState::Retired)
        .await
        .expect("activate");
    let second = filled_generation(&store, &ledger(&["balances"])).await;
    let abandoned = filled_generation(&store, &ledger(&["balances"])).await;
    store
        .set_state(&abandoned, GenerationState::Abandoned)
        .await
        .expect("abandon");
    assert_eq!(
        gen_of(store.clone(), "balances").await.expect("read"),
        Some(json!(1))
    );
    store
        .activate(&second, GenerationState::Retired)
        .await
        .expect("cut over");
    assert_eq!(
        gen_of(store.clone(), "balances").await.expect("read"),
        Some(json!(2))
    );
    assert!(
        gen_of(store.clone(), "audit").await.is_err(),
        "a collection the active generation lacks has no stable name"
    );
    let states = |generations: Vec<Generation>| -> Vec<(u32, GenerationState)> {
        generations.iter().map(|g| (g.number, g.state)).collect()
    };
    assert_eq!(
        states(store.generations("ledger").await.expect("generations")),
        [
            (1, GenerationState::Retired),
            (2, GenerationState::Active),
            (3, GenerationState::Abandoned)
        ]
    );
    store
        .activate(&first, GenerationState::RolledBack)
        .await
        .expect("roll back");
    assert_eq!(
        gen_of(store.clone(), "balances").await.expect("read"),
        Some(json!(1))
    );
    assert_eq!(
        gen_of(store.clone(), "audit").await.expect("read"),
        Some(json!(1))
    );
    assert_eq!(
        states(store.generations("ledger").await.expect("generations")),
        [
            (1, GenerationState::Active),
            (2, GenerationState::RolledBack),
            (3, GenerationState::Abandoned)
        ]
    );

    store
        .record_refusal("sub/ledger.wasm", Some("not a valid WebAssembly component"))
        .await
        .expect("record");
    store
        .record_refusal("other.wasm", Some("first"))
        .await
        .expect("record");
    store
        .record_refusal("other.wasm", Some("second"))
        .await
        .expect("record");
    let refusals: Vec<(String, String)> = store
        .refusals()
        .await
        .expect("refusals")
        .into_iter()
        .map(|r| (r.component, r.error))
        .collect();
    assert_eq!(
        refusals,
        [
            ("other.wasm".to_owned(), "second".to_owned()),
            (
                "sub/ledger.wasm".to_owned(),
                "not a valid WebAssembly component".to_owned()
            )
        ]
    );
    store
        .record_refusal("other.wasm", None)
        .await
        .expect("clear");
    assert_eq!(store.refusals().await.expect("refusals").len(), 1);
}

/// Queries follow MongoDB's semantics on both stores: type classes, null and missing fields,
/// array elements, whole-document equality, dates, logical operators, sort order across types,
/// skip and limit. Pausing is recorded per projection.
async fn queries_follow_mongodb_semantics_and_pauses_are_recorded(store: Arc<dyn Store>) {
    let manifest = ledger(&["items"]);
    let generation = store
        .create_generation(&manifest, "hash")
        .await
        .expect("create generation");
    let docs = [
        json!({ "_id": "a", "n": 1, "s": "x", "tags": ["red", "blue"], "when": { "$date": "2025-01-01T00:00:00.000Z" }, "nested": { "k": 1 } }),
        json!({ "_id": "b", "n": 2.5, "s": "y", "tags": [], "nested": { "k": 2 } }),
        json!({ "_id": "c", "n": "3", "s": null }),
        json!({ "_id": "d", "n": 10, "tags": ["blue"], "when": { "$date": "2025-06-01T00:00:00.000Z" } }),
        json!({ "_id": "e", "s": "x", "nested": { "k": 1, "extra": true } }),
    ];
    commit_first(
        &store,
        &generation,
        docs.iter().map(|d| ("items".to_owned(), d.clone())),
    )
    .await;
    store
        .activate(&generation, GenerationState::Retired)
        .await
        .expect("activate");

    let find = |filter: serde_json::Value, sort: serde_json::Value, skip: u64, limit: u64| {
        let store = Arc::clone(&store);
        async move {
            let query = Query::parse(Some(&filter), Some(&sort), Some(skip), Some(limit))
                .unwrap_or_else(|e| panic!("{filter}: {e}"));
            let found = store
                .find_documents("ledger", "items", &query)
                .await
                .unwrap_or_else(|e| panic!("{filter}: {e}"));
            found
                .iter()
                .map(|d| d["_id"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let cases = [
        (json!({ "n": { "$gt": 1 } }), vec!["b", "d"]),
        (json!({ "n": { "$gte": 1, "$lt": 10 } }), vec!["a", "b"]),
        (json!({ "n": { "$gte": "0" } }), vec!["c"]),
        (json!({ "s": null }), vec!["c", "d"]),
        (json!({ "s": { "$ne": null } }), vec!["a", "b", "e"]),
        (json!({ "tags": "blue" }), vec!["a", "d"]),
        (json!({ "tags": ["blue"] }), vec!["d"]),
        (json!({ "tags": { "$exists": false } }), vec!["c", "e"]),
        (json!({ "nested.k": 1 }), vec!["a", "e"]),
        (json!({ "nested": { "k": 1 } }), vec!["a"]),
        (
            json!({ "when": { "$lt": { "$date": "2025-03-01T00:00:00.000Z" } } }),
            vec!["a"],
        ),
        (
            json!({ "$or": [{ "s": "y" }, { "n": 10 }] }),
            vec!["b", "d"],
        ),
        (json!({ "n": { "$in": [1, "3"] } }), vec!["a", "c"]),
        (json!({ "n": { "$nin": [1, "3"] } }), vec!["b", "d", "e"]),
        (json!({ "$nor": [{ "s": "x" }] }), vec!["b", "c", "d"]),
        (
            json!({ "$and": [{ "s": "x" }, { "n": { "$exists": true } }] }),
            vec!["a"],
        ),
        (json!({ "n": 1.0 }), vec!["a"]),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            find(filter.clone(), json!("_id"), 0, 100).await,
            expected,
            "{filter}"
        );
    }
    assert_eq!(
        find(json!({}), json!("n"), 0, 100).await,
        ["e", "a", "b", "d", "c"]
    );
    assert_eq!(
        find(json!({}), json!("-n"), 0, 100).await,
        ["c", "d", "b", "a", "e"]
    );
    assert_eq!(
        find(json!({}), json!("s,-_id"), 0, 100).await,
        ["d", "c", "e", "a", "b"]
    );
    assert_eq!(find(json!({}), json!("n"), 1, 2).await, ["a", "b"]);
    let missing = store
        .find_documents("ledger", "nope", &Query::default())
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    assert!(store.paused().await.expect("paused").is_empty());
    store.set_paused("ledger", true).await.expect("pause");
    store.set_paused("ledger", true).await.expect("pause twice");
    assert_eq!(
        store
            .paused()
            .await
            .expect("paused")
            .into_iter()
            .collect::<Vec<_>>(),
        ["ledger"]
    );
    store.set_paused("ledger", false).await.expect("resume");
    assert!(store.paused().await.expect("paused").is_empty());
}

/// Instantiate every contract test for one backend.
macro_rules! contract_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $name() {
                        let (store, _guard) = $open.await;
                        super::$name(store).await;
                    }
                };
            }

            case!(appends_and_reads_streams);
            case!(refuses_wrong_expected_versions);
            case!(multi_stream_appends_are_atomic);
            case!(refuses_malformed_events);
            case!(retried_appends_are_recognised_by_their_event_ids);
            case!(reads_all_with_filters);
            case!(concurrent_appenders_never_leave_gaps);
            case!(batch_commits_are_guarded_by_the_checkpoint);
            case!(generations_cut_over_and_roll_back);
            case!(abandoned_generations_are_never_activated);
            case!(dead_letters_commit_with_their_checkpoint);
            case!(dead_letters_are_counted_and_found_by_the_store);
            case!(queries_follow_mongodb_semantics_and_pauses_are_recorded);
            case!(unique_indexes_mean_the_same_on_both_stores);
            case!(dead_letters_are_read_a_page_at_a_time);
        }
    };
}

async fn open_sqlite() -> (Arc<dyn Store>, Sandbox) {
    let sandbox = Sandbox::new();
    (sandbox.store("contract.db").await, sandbox)
}

async fn open_mongodb() -> (Arc<dyn Store>, ()) {
    let uri = refold_tests::mongo::fresh_uri("contract");
    (
        refold::store::open(&uri).await.expect("open MongoDB store"),
        (),
    )
}

contract_suite!(embedded, open_sqlite());
contract_suite!(mongodb, open_mongodb());
