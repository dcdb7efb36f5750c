//! Projections in other languages than Rust: the same history through the Rust, JavaScript,
//! Python and C versions of the four examples gives byte-identical read collections.

use std::path::Path;

use refold::cli::history;
use refold_tests::{
    EXAMPLE_NAMES, Sandbox, catch_up, examples, js_examples, projections, python_examples, text,
};

/// Every row of a read model's view, as stored: `(id, body text)`.
fn rows(db: &Path, view: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.prepare(&format!("SELECT id, body FROM \"{view}\" ORDER BY id"))
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .unwrap_or_else(|e| panic!("read {view}: {e}"))
}

/// The read collections of the four examples.
const VIEWS: [&str; 5] = [
    "payments__payments",
    "payments__org_stats",
    "invoice-billing__invoices",
    "invoice-analytics__monthly",
    "user-profiles__users",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_examples_in_every_language_equal_the_examples_in_rust_byte_for_byte() {
    let sandbox = Sandbox::new();
    let appends = history::generate(6_000, 17);
    let languages = [
        ("rust", examples()),
        ("javascript", js_examples()),
        ("python", python_examples()),
    ];
    for (language, components) in languages {
        let store = sandbox.store(&format!("{language}.db")).await;
        for chunk in appends.chunks(500) {
            store.append_all(chunk.to_vec()).await.expect("append");
        }
        let folder = projections(components, &EXAMPLE_NAMES, &sandbox.path(language));
        let out = catch_up(&sandbox.uri(&format!("{language}.db")), &folder, &[]);
        assert!(out.status.success(), "{language}: {}", text(&out.stderr));
    }
    for view in VIEWS {
        let from_rust = rows(&sandbox.path("rust.db"), view);
        assert!(!from_rust.is_empty(), "{view} is empty");
        for (language, _) in &languages[1..] {
            let other = rows(&sandbox.path(&format!("{language}.db")), view);
            assert_eq!(
                from_rust.len(),
                other.len(),
                "{view} in {language}: document count"
            );
            for (r, o) in from_rust.iter().zip(&other) {
                assert_eq!(
                    r, o,
                    "{view}: the {language} document differs from the Rust one"
                );
            }
        }
    }
}
