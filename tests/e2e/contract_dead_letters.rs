//! The store contract for reading dead letters a page at a time.

use std::sync::Arc;

use refold::store::{DeadLetter, Store};

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
pub(crate) async fn dead_letters_are_read_a_page_at_a_time(store: Arc<dyn Store>) {
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
