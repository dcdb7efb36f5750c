//! The store contract for batch commits: guarded by the checkpoint.

use super::*;

/// A batch commit moves the checkpoint only from the expected value, with its writes, or not at all.
pub(super) async fn batch_commits_are_guarded_by_the_checkpoint(store: Arc<dyn Store>) {
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
        .create_generation(&manifest, "hash-1", &[], None)
        .await
        .expect("create generation");
    assert_eq!((generation.number, generation.checkpoint), (1, 0));
    // A replay from the origin reads no document it never wrote while the collections are empty.
    let is_empty = |store: &Arc<dyn Store>| {
        let mut reader = store.reader(&generation).expect("reader");
        tokio::task::spawn_blocking(move || reader.is_empty().expect("is_empty"))
    };
    assert!(is_empty(&store).await.expect("reader thread"));
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
    assert!(!is_empty(&store).await.expect("reader thread"));
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
