//! The store contract: behaviour every store must have, written once and run against each
//! backend (the embedded store here; MongoDB joins through the same functions).
//!
//! One file per concern: [`streams`], [`commits`], [`unique`], [`dead_letters`],
//! [`generations`], [`queries`]; the helpers they share and the suite that runs each on both
//! backends are here.

mod commits;
mod dead_letters;
mod generations;
mod queries;
mod streams;
mod unique;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use refold::domain::{
    CollectionSpec, EventFilter, ExpectedVersion, Generation, GenerationState, Manifest, NewEvent,
};
use refold::store::{BatchWrites, DeadLetter, Query, Store, StoreError, StreamAppend};
use refold_tests::Sandbox;
use serde_json::json;

use commits::batch_commits_are_guarded_by_the_checkpoint;
use dead_letters::{
    dead_letters_are_counted_and_found_by_the_store, dead_letters_are_read_a_page_at_a_time,
    dead_letters_commit_with_their_checkpoint,
};
use generations::{abandoned_generations_are_never_activated, generations_cut_over_and_roll_back};
use queries::queries_follow_mongodb_semantics_and_pauses_are_recorded;
use streams::{
    appends_and_reads_streams, concurrent_appenders_never_leave_gaps,
    multi_stream_appends_are_atomic, reads_all_with_filters, refuses_malformed_events,
    refuses_wrong_expected_versions, retried_appends_are_recognised_by_their_event_ids,
};
use unique::unique_indexes_mean_the_same_on_both_stores;

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
        .create_generation(manifest, "hash", &[], None)
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
