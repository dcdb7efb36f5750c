//! The store contract for unique indexes: both stores accept and refuse the same batches.

use std::sync::Arc;

use refold::domain::{CollectionSpec, IndexSpec, Manifest};
use refold::store::{BatchWrites, Store, StoreError};
use serde_json::{Value, json};

/// `users` with a unique `email`, and a unique `(org, ref)`.
fn manifest() -> Manifest {
    let mut manifest = Manifest::new("accounts", 1, ["users"]);
    manifest.collections = vec![CollectionSpec {
        name: "users".into(),
        indexes: vec![
            IndexSpec::unique("email", &["email"]),
            IndexSpec::unique("org_ref", &["org", "ref"]),
        ],
    }];
    manifest
}

fn writes(documents: Vec<Value>) -> BatchWrites {
    let documents = documents
        .into_iter()
        .map(|doc| {
            let Value::Object(map) = doc else {
                unreachable!("documents are objects")
            };
            let id = map["_id"].as_str().unwrap_or_default().to_owned();
            ("users".to_owned(), id, Some(Arc::new(map)))
        })
        .collect();
    BatchWrites {
        documents,
        ..BatchWrites::default()
    }
}

/// Unique indexes mean the same on both stores: documents whose key is missing or null never
/// collide (MongoDB's unique indexes are partial to match SQLite's NULLs); `true`, `1` and `"1"`
/// are three values and `1` and `1.0` one; two documents of one batch may trade their values;
/// a batch that breaks an index is refused as a whole (`StoreError::Refused`, naming the
/// index), leaving the documents and the checkpoint as they were.
pub(super) async fn unique_indexes_mean_the_same_on_both_stores(store: Arc<dyn Store>) {
    let generation = store
        .create_generation(&manifest(), "hash", &[], None)
        .await
        .expect("create generation");
    let first = writes(vec![
        json!({ "_id": "a", "email": "x", "org": "o", "ref": 1 }),
        json!({ "_id": "b", "email": "y", "org": "o" }),
        json!({ "_id": "c", "org": "o" }),
        json!({ "_id": "d" }),
        json!({ "_id": "e", "email": null, "org": "o", "ref": null }),
        json!({ "_id": "f", "email": null }),
        json!({ "_id": "g", "email": true }),
        json!({ "_id": "h", "email": 1 }),
        json!({ "_id": "i", "email": "1" }),
    ]);
    store
        .commit(&generation, first, 0, 1)
        .await
        .expect("missing and null keys never collide; true, 1 and \"1\" are three values");
    let swap = writes(vec![
        json!({ "_id": "a", "email": "y", "org": "o", "ref": 1 }),
        json!({ "_id": "b", "email": "x", "org": "o" }),
    ]);
    store
        .commit(&generation, swap, 1, 2)
        .await
        .expect("two documents trade their unique values in one batch");

    for (label, duplicate, index) in [
        (
            "a taken email",
            json!({ "_id": "z", "email": "x" }),
            "email",
        ),
        ("1.0 is 1", json!({ "_id": "z", "email": 1.0 }), "email"),
        (
            "a taken (org, ref)",
            json!({ "_id": "z", "org": "o", "ref": 1 }),
            "org_ref",
        ),
    ] {
        let batch = writes(vec![json!({ "_id": "y", "email": "new" }), duplicate]);
        match store.commit(&generation, batch, 2, 3).await {
            Err(StoreError::Refused(message)) => {
                assert!(message.contains(index), "{label}: {message}");
            }
            other => panic!("{label}: expected a refusal, got {other:?}"),
        }
    }
    let stored = store.generations("accounts").await.expect("generations");
    assert_eq!(stored[0].checkpoint, 2, "a refused batch moves nothing");
    let mut reader = store.reader(&generation).expect("reader");
    let found = tokio::task::spawn_blocking(move || {
        ["a", "b", "y", "z"].map(|id| reader.get("users", id).expect("get"))
    })
    .await
    .expect("reader thread");
    assert_eq!(
        found[0].as_ref().map(|d| d["email"].clone()),
        Some(json!("y"))
    );
    assert_eq!(
        found[1].as_ref().map(|d| d["email"].clone()),
        Some(json!("x"))
    );
    assert_eq!(
        (&found[2], &found[3]),
        (&None, &None),
        "nothing of a refused batch is written"
    );
}
