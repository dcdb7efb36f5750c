//! The store contract for dead letters: committed with their checkpoint, counted and found by
//! the store, read a page at a time.

use super::*;

/// A skipped event's dead letter commits in the batch that moves the checkpoint past it, or not
/// at all: a commit the checkpoint guard refuses records none.
pub(super) async fn dead_letters_commit_with_their_checkpoint(store: Arc<dyn Store>) {
    let generation = store
        .create_generation(&ledger(&["entries"]), "hash", &[], None)
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
pub(super) async fn dead_letters_are_counted_and_found_by_the_store(store: Arc<dyn Store>) {
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

fn letter(projection: &str, generation: u32, position: u64) -> DeadLetter {
    DeadLetter {
        projection: projection.into(),
        generation,
        version: 1,
        position,
        event_id: format!("event-{projection}-{generation}-{position}"),
        event_type: "Tick".into(),
        aggregate_id: "thing-1".into(),
        error: "failed".into(),
        attempts: 3,
        at_ms: 1_740_000_000_000,
        retry_requested: false,
    }
}

/// Dead letters are read a page at a time, by projection, generation and position: each page
/// starts after the last letter of the one before, nothing is skipped or repeated, and the
/// pages of one projection hold only its letters.
pub(super) async fn dead_letters_are_read_a_page_at_a_time(store: Arc<dyn Store>) {
    let mut recorded = Vec::new();
    for (projection, generation, position) in [
        ("ledger", 2, 3),
        ("ledger", 1, 12),
        ("audit", 1, 7),
        ("ledger", 1, 4),
        ("ledger", 2, 1),
        ("ledger", 1, 30),
        ("zeta", 1, 1),
    ] {
        let l = letter(projection, generation, position);
        store.record_dead_letter(&l).await.expect("record");
        recorded.push(l);
    }
    recorded.sort_by_key(|l| (l.projection.clone(), l.generation, l.position));
    for (projection, limit) in [
        (None, 2),
        (None, 3),
        (Some("ledger"), 2),
        (Some("ledger"), 10),
    ] {
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .dead_letter_page(projection, after.as_ref(), limit)
                .await
                .expect("page");
            assert!(page.len() <= limit);
            after = page.last().map(DeadLetter::key);
            let last = page.len() < limit;
            pages.extend(page);
            if last {
                break;
            }
        }
        let expected: Vec<DeadLetter> = recorded
            .iter()
            .filter(|l| projection.is_none_or(|p| l.projection == p))
            .cloned()
            .collect();
        assert_eq!(pages, expected, "{projection:?} in pages of {limit}");
        let all = store.dead_letters(projection).await.expect("all");
        assert_eq!(all, expected);
    }
}
