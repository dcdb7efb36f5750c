//! The store contract for generations: abandoned ones never activated, cut-overs and rollbacks.

use super::*;

/// A generation abandoned while it was building is never served: its activation is refused, and
/// the stable names keep pointing at the active generation. (Its projector may still reach the
/// head after the supervisor abandoned it.)
pub(super) async fn abandoned_generations_are_never_activated(store: Arc<dyn Store>) {
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
pub(super) async fn generations_cut_over_and_roll_back(store: Arc<dyn Store>) {
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
