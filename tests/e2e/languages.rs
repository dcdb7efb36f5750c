//! Projections in other languages than Rust: the same history through the Rust and the
//! JavaScript versions of the four examples gives byte-identical read collections.

use std::path::Path;

use refold::cli::history;
use refold_tests::{EXAMPLE_NAMES, Sandbox, catch_up, examples, js_examples, projections, text};

/// Every row of a read model's view, as stored: `(id, body text)`.
fn rows(db: &Path, view: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.prepare(&format!("SELECT id, body FROM \"{view}\" ORDER BY id"))
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .unwrap_or_else(|e| panic!("read {view}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_examples_in_javascript_equal_the_examples_in_rust_byte_for_byte() {
    let sandbox = Sandbox::new();
    let appends = history::generate(6_000, 17);
    for store in ["rust.db", "js.db"] {
        let store = sandbox.store(store).await;
        for chunk in appends.chunks(500) {
            store.append_all(chunk.to_vec()).await.expect("append");
        }
    }
    let rust = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("rust"));
    let js = projections(js_examples(), &EXAMPLE_NAMES, &sandbox.path("js"));
    for (store, folder) in [("rust.db", &rust), ("js.db", &js)] {
        let out = catch_up(&sandbox.uri(store), folder, &[]);
        assert!(out.status.success(), "{store}: {}", text(&out.stderr));
    }
    for view in [
        "payments__payments",
        "payments__org_stats",
        "invoice-billing__invoices",
        "invoice-analytics__monthly",
        "user-profiles__users",
    ] {
        let (from_rust, from_js) = (
            rows(&sandbox.path("rust.db"), view),
            rows(&sandbox.path("js.db"), view),
        );
        assert!(!from_rust.is_empty(), "{view} is empty");
        assert_eq!(from_rust.len(), from_js.len(), "{view}: document count");
        for (r, j) in from_rust.iter().zip(&from_js) {
            assert_eq!(r, j, "{view}: the JavaScript document differs");
        }
    }
}
