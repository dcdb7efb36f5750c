//! Projections in other languages than Rust: the same history through the Rust, JavaScript,
//! Python and C versions of the four examples gives byte-identical read collections.

use std::path::Path;

use refold::cli::demo_data;
use refold::domain::{ExpectedVersion, NewEvent};
use refold_tests::{
    EXAMPLE_NAMES, Running, Sandbox, c_examples, catch_up, copy_log, dump, examples, fixtures,
    js_examples, js_fixtures, projections, python_examples, python_fixtures, text, wait_until,
    wasi_fixture,
};
use serde_json::json;

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
    let appends = demo_data::generate(6_000, 17);
    let languages = [
        ("rust", examples()),
        ("javascript", js_examples()),
        ("python", python_examples()),
        ("c", c_examples()),
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

/// A component built against the first contract, `refold:projection@0.1.0`, runs unchanged on
/// this host, and its JSON updates give the documents the SDK's typed `update-fields` gives:
/// `healthy-v010` is `healthy` straight on the 0.1.0 bindings.
#[tokio::test(flavor = "multi_thread")]
async fn a_component_built_against_contract_0_1_0_runs_unchanged() {
    let old = std::fs::read(fixtures().join("healthy_v010.wasm")).expect("fixture");
    let new = std::fs::read(fixtures().join("healthy.wasm")).expect("fixture");
    let names = |bytes: &[u8], name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
    assert!(names(&old, "refold:projection/collections@0.1.0"));
    assert!(!names(&old, "refold:projection/collections@0.1.1"));
    assert!(names(&new, "refold:projection/collections@0.1.1"));

    let sandbox = Sandbox::new();
    let store = sandbox.store("s.db").await;
    for chunk in demo_data::generate(1_500, 3).chunks(500) {
        store.append_all(chunk.to_vec()).await.expect("append");
    }
    let folder = projections(
        fixtures(),
        &["healthy", "healthy-v010"],
        &sandbox.path("projections"),
    );
    let out = catch_up(&sandbox.uri("s.db"), &folder, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for collection in ["by_type", "by_stream"] {
        let typed = rows(&sandbox.path("s.db"), &format!("healthy__{collection}"));
        let json = rows(
            &sandbox.path("s.db"),
            &format!("healthy-v010__{collection}"),
        );
        assert!(!typed.is_empty(), "{collection} is empty");
        assert_eq!(typed, json, "{collection}");
    }
}

/// A guest called once per event (it reads the clock) keeps its instance from one call of the
/// batch size to the next while the calls are committed together: a fresh instance per call of
/// 500 events cost Python a tenth of its replay time. The next commit's calls get a fresh one,
/// so an instance and its memory never outlive the commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_called_per_event_keeps_its_instance_for_the_calls_committed_together() {
    const EVENTS: usize = 6_000;
    let sandbox = Sandbox::new();
    let store = sandbox.store("abacus.db").await;
    for chunk in 0..EVENTS / 500 {
        let events = (0..500)
            .map(|i| NewEvent {
                id: None,
                aggregate_type: "Bead".into(),
                event_type: "Moved".into(),
                event_data: json!({ "bead": chunk * 500 + i }),
                metadata: json!({}),
                timestamp_ms: None,
            })
            .collect();
        store
            .append(&format!("row-{chunk}"), ExpectedVersion::NoStream, events)
            .await
            .expect("append");
    }
    let folder = projections(wasi_fixture(), &["abacus"], &sandbox.path("projections"));
    let out = catch_up(&sandbox.uri("abacus.db"), &folder, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let counts = &dump(&sandbox.path("abacus.db"))["abacus__counts"];
    assert_eq!(counts.len(), EVENTS);
    let mut by_position: Vec<(u64, u64)> = counts
        .iter()
        .map(|(id, count)| {
            let position = id.parse().expect("position");
            (position, count["byInstance"].as_u64().expect("byInstance"))
        })
        .collect();
    by_position.sort_unstable();
    // The default batch size is 500 events per call: an instance that handled more went on
    // from one call to the next.
    let most = by_position.iter().map(|(_, n)| *n).max().expect("counts");
    assert!(most > 500, "no instance outlived its call: at most {most}");
    // A count starts again at 1 only at the first event of a commit; within one it goes up by
    // one per event.
    let fresh: Vec<u64> = by_position
        .iter()
        .filter(|(_, n)| *n == 1)
        .map(|(position, _)| *position)
        .collect();
    assert!(
        fresh.len() >= 2,
        "one instance for the whole replay: {fresh:?}"
    );
    for pair in by_position.windows(2) {
        let ((_, before), (position, n)) = (pair[0], pair[1]);
        assert!(
            n == before + 1 || n == 1,
            "event {position} counted {n} after {before}"
        );
    }
}

/// Guests that read the clock and draw random numbers (Python through `time`, `random`,
/// `os.urandom` and `uuid4`, or the clock and `random` alone; JavaScript through `Date` and
/// `Math.random`; Rust through `SystemTime`) record the same values when the log is
/// replayed in one go as they did live, event by event: the clock reads the event's timestamp,
/// and randomness is seeded per projection and event.
#[tokio::test(flavor = "multi_thread")]
async fn clock_and_randomness_give_the_same_documents_live_and_on_a_replay() {
    const EVENTS: usize = 24;
    const MODELS: [&str; 4] = [
        "dice__rolls",
        "sundial__readings",
        "hourglass__readings",
        "wasi-files__loot",
    ];
    let sandbox = Sandbox::new();
    let live = sandbox.store("live.db").await;
    let folder = projections(
        python_fixtures(),
        &["dice", "sundial"],
        &sandbox.path("projections"),
    );
    projections(wasi_fixture(), &["wasi_files"], &folder);
    projections(js_fixtures(), &["hourglass"], &folder);
    let _host = Running::start(&[
        "run",
        "--store",
        &sandbox.uri("live.db"),
        "--projections",
        &folder.to_string_lossy(),
    ]);
    let db = sandbox.path("live.db");
    for i in 0..EVENTS {
        let event = NewEvent {
            id: None,
            aggregate_type: "Die".into(),
            event_type: "Rolled".into(),
            event_data: json!({ "throw": i }),
            metadata: json!({}),
            timestamp_ms: Some(1_700_000_000_000 + 1_000 * i as i64),
        };
        live.append(&format!("die-{}", i % 3), ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
        // Live: each event is folded in before the next is appended.
        wait_until("the live event to be folded in", || {
            let db = db.clone();
            async move {
                let models = dump(&db);
                MODELS
                    .iter()
                    .all(|m| models.get(*m).is_some_and(|d| d.len() == i + 1))
            }
        })
        .await;
    }

    let replay = sandbox.store("replay.db").await;
    copy_log(live.as_ref(), replay.as_ref()).await;
    let out = catch_up(&sandbox.uri("replay.db"), &folder, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let (live, replayed) = (dump(&db), dump(&sandbox.path("replay.db")));
    for model in MODELS {
        assert_eq!(live[model].len(), EVENTS, "{model}");
        assert_eq!(live[model], replayed[model], "{model}: the replay differs");
    }
    let rolls = &live["dice__rolls"];
    for (_, roll) in rolls {
        let event_ms = roll["eventMs"].as_i64().expect("eventMs");
        assert_eq!(roll["timeNs"], json!(event_ms * 1_000_000), "{roll}");
        assert_eq!(roll["environment"], 0, "{roll}");
    }
    for model in ["sundial__readings", "hourglass__readings"] {
        for (_, reading) in &live[model] {
            assert_eq!(reading["timeMs"], reading["eventMs"], "{model}: {reading}");
        }
    }
    let randoms: std::collections::BTreeSet<String> = live["hourglass__readings"]
        .iter()
        .map(|(_, r)| r["random"].to_string())
        .collect();
    assert_eq!(randoms.len(), EVENTS, "Math.random repeats across events");
    // Seeded per event, not constant: every event drew different numbers.
    for field in ["random", "urandom", "uuid"] {
        let mut seen: Vec<String> = rolls.iter().map(|(_, r)| r[field].to_string()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), EVENTS, "{field} repeats: {rolls:?}");
    }
}

/// The JavaScript SDK writes update and document JSON with the engine's own `JSON.stringify`,
/// marking floats and bigints and replacing the marks after: its test (run by Node) checks that
/// this writes what the plain walk it replaced writes, for values of every kind.
#[test]
fn the_javascript_sdk_writes_json_as_the_plain_walk_did() {
    let test = refold_tests::repo_root().join("example-projections/js/sdk/json.test.mjs");
    let output = std::process::Command::new("node")
        .arg(&test)
        .output()
        .expect("node (installed by scripts/setup)");
    assert!(
        output.status.success(),
        "{}: {}{}",
        test.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
