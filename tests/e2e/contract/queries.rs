//! The store contract for queries of read models, and paused projections.

use super::*;

/// Queries follow MongoDB's semantics on both stores: type classes, null and missing fields,
/// array elements, whole-document equality, dates, logical operators, sort order across types,
/// skip and limit. Pausing is recorded per projection.
pub(super) async fn queries_follow_mongodb_semantics_and_pauses_are_recorded(
    store: Arc<dyn Store>,
) {
    let manifest = ledger(&["items"]);
    let generation = store
        .create_generation(&manifest, "hash", &[], None)
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
