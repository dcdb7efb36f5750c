//! `refold trace`, through the real binary on both stores: a payment's history among many other
//! events, replayed from the batches recorded as writing it; the same history with `--full`; the
//! same again once the record is gone (a store from before it existed); and errors that name
//! what exists.

use refold::domain::{ExpectedVersion, Position};
use refold::store::{Store, StreamAppend};
use refold_tests::{Sandbox, catch_up, examples, mongo, payment, projections, run, text};
use serde_json::{Value, json};

/// `count` payments of other streams, processed, across five organizations, in one append.
async fn others(store: &dyn Store, from: usize, count: usize) {
    let appends = (from..from + count)
        .map(|i| StreamAppend {
            aggregate_id: format!("payment-other-{i}"),
            expected: ExpectedVersion::NoStream,
            events: vec![payment(
                "PaymentProcessed",
                &format!("org-{}", i % 5),
                json!({ "amount": 10.0, "currency": "EUR" }),
            )],
        })
        .collect();
    store.append_all(appends).await.expect("append");
}

/// Append the `version + 1`th event of `payment-1` (organization `org-1`); its position.
async fn append_to(store: &dyn Store, version: u64, event_type: &str, data: Value) -> Position {
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    store
        .append(
            "payment-1",
            expected,
            vec![payment(event_type, "org-1", data)],
        )
        .await
        .expect("append")
        .last_position
}

fn trace(uri: &str, args: &[&str]) -> Value {
    let mut all = vec![
        "trace",
        "payments",
        "payments",
        "payment-1",
        "--json",
        "--store",
        uri,
    ];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "{uri}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a trace as JSON")
}

fn positions(trace: &Value) -> Vec<u64> {
    trace["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["position"].as_u64().expect("position"))
        .collect()
}

/// The steps without what depends on how they were found.
fn steps(trace: &Value) -> Value {
    trace["steps"].clone()
}

async fn a_payment_s_history_is_traced(uri: &str, forget: impl AsyncFnOnce()) {
    let sandbox = Sandbox::new();
    let dir = projections(examples(), &["payments"], &sandbox.path("p"));
    let store = refold::store::open(uri).await.expect("open");
    others(store.as_ref(), 0, 10).await;
    let processed = append_to(
        store.as_ref(),
        0,
        "PaymentProcessed",
        json!({ "amount": 12.5, "currency": "EUR", "method": "card" }),
    )
    .await;
    others(store.as_ref(), 10, 700).await;
    let failed = append_to(
        store.as_ref(),
        1,
        "PaymentFailed",
        json!({ "error": "card_declined" }),
    )
    .await;
    others(store.as_ref(), 710, 600).await;
    let out = catch_up(uri, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A later batch writes it again.
    others(store.as_ref(), 1310, 900).await;
    let retried = append_to(
        store.as_ref(),
        2,
        "PaymentProcessed",
        json!({ "amount": 12.5, "currency": "EUR" }),
    )
    .await;
    let out = catch_up(uri, &dir, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let head = store.head().await.expect("head");

    let recorded = trace(uri, &[]);
    assert_eq!(recorded["mode"], "recorded", "{recorded:#}");
    assert_eq!(recorded["matches"], true, "{recorded:#}");
    assert_eq!(positions(&recorded), [processed, failed, retried]);
    let replayed = recorded["replayed"].as_u64().expect("replayed");
    assert!(
        replayed < head - 500,
        "only the batches that wrote the payment are replayed: {replayed} of {head}"
    );
    let [first, second, third] = recorded["steps"].as_array().expect("steps").as_slice() else {
        panic!("three steps: {recorded:#}");
    };
    assert_eq!(first["event"]["eventType"], "PaymentProcessed");
    assert!(
        first["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .any(|c| c["path"] == "status"
                && c["after"] == "completed"
                && c.get("before").is_none()),
        "{first:#}"
    );
    let status = second["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["path"] == "status")
        .expect("the failure changed the status");
    assert_eq!(
        (&status["before"], &status["after"]),
        (&json!("completed"), &json!("failed"))
    );
    assert_eq!(
        second["logs"],
        json!([{ "position": failed, "level": "debug", "message": "payment-1 failed: card_declined" }]),
        "what the guest logged for the event"
    );
    assert_eq!(third["document"]["attempts"], 3);
    assert_eq!(third["document"]["status"], "completed");
    assert_eq!(
        third["document"], recorded["document"],
        "the last step is the stored document"
    );

    let full = trace(uri, &["--full"]);
    assert_eq!(full["mode"], "full");
    assert_eq!(full["matches"], true);
    assert_eq!(
        steps(&full),
        steps(&recorded),
        "the whole history says the same"
    );
    assert!(full["replayed"].as_u64() > Some(replayed));

    let out = run(&["trace", "payments", "payments", "payment-1", "--store", uri]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for line in [
        "3 events changed it",
        "~ status: \"completed\" -> \"failed\"",
        "~ attempts: 1 -> 2",
        "log debug: payment-1 failed: card_declined",
        "the replay ends with the document as stored",
    ] {
        assert!(shown.contains(line), "`{line}` in:\n{shown}");
    }

    // A store from before the record: the whole history is replayed, and the trace says so.
    forget().await;
    let unrecorded = trace(uri, &[]);
    assert_eq!(unrecorded["mode"], "full", "{unrecorded:#}");
    assert_eq!(steps(&unrecorded), steps(&recorded));
    let notes = unrecorded["notes"].to_string();
    assert!(notes.contains("no record of the batches"), "{notes}");

    for (args, says) in [
        (
            vec!["trace", "nope", "payments", "p"],
            "no projection named `nope`",
        ),
        (
            vec!["trace", "payments", "nope", "p"],
            "`nope` is not a collection of projection `payments`; it declares: payments, org_stats",
        ),
        (
            vec!["trace", "payments", "payments", "p", "--generation", "9"],
            "projection `payments` has no generation 9 (it has: 1)",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--store", uri]);
        let out = run(&all);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A document no batch wrote has no history.
    let out = run(&[
        "trace",
        "payments",
        "payments",
        "payment-none",
        "--json",
        "--store",
        uri,
    ]);
    let none: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (none["steps"].clone(), none["matches"].clone()),
        (json!([]), json!(true))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_s_history_is_traced_on_the_embedded_store() {
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("store.db");
    let path = sandbox.path("store.db");
    a_payment_s_history_is_traced(&uri, async || {
        let conn = rusqlite::Connection::open(&path).expect("open the store file");
        conn.execute("DELETE FROM document_writes", [])
            .expect("forget the record");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_s_history_is_traced_on_mongodb() {
    let uri = mongo::fresh_uri("trace");
    let forget_uri = uri.clone();
    a_payment_s_history_is_traced(&uri, async move || {
        let (_client, db) = mongo::database(&forget_uri).await;
        db.collection::<mongodb::bson::Document>("document_writes")
            .drop()
            .await
            .expect("forget the record");
    })
    .await;
}
