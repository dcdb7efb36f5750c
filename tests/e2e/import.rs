//! `refold import`, through the real binary: a generated history in the seeds' shape into both
//! stores, a run again after a crash that duplicates nothing, a broken stream named by its line,
//! a history that differs from the store's, and a MongoDB collection written the way seed 000's
//! application writes it.

use std::fmt::Write as _;
use std::path::Path;

use mongodb::bson::{DateTime, doc, oid::ObjectId};
use refold::domain::{EventFilter, RecordedEvent};
use refold::store::Store;
use refold_tests::{Sandbox, mongo, run, text};
use serde_json::{Value, json};

/// A history of `streams` payments with `per_stream` events each, interleaved as an
/// application writes them: line `i` is the `(i / streams + 1)`th event of stream `i % streams`.
/// Every third event has an ObjectId, the others a string id.
fn history(streams: usize, per_stream: usize) -> Vec<Value> {
    let start = 1_734_602_400_000i64; // 2024-12-19T10:00:00Z
    (0..streams * per_stream)
        .map(|i| {
            let (stream, version) = (i % streams, i / streams + 1);
            let id = if i % 3 == 0 {
                json!({ "$oid": format!("{:024x}", 0x65a1_0000_0000u64 + i as u64) })
            } else {
                json!(format!("event-{i}"))
            };
            json!({
                "_id": id,
                "aggregateId": format!("payment-{stream}"),
                "aggregateType": "Payment",
                "eventType": if version == 1 { "PaymentInitiated" } else { "PaymentProcessed" },
                "eventData": { "amount": (i % 97) as f64 + 0.5, "currency": "EUR", "step": version },
                "version": version,
                "timestamp": refold::domain::time::iso8601_millis(start + i as i64 * 1000),
                "metadata": { "organizationId": format!("org-{}", stream % 5) },
            })
        })
        .collect()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let mut text = String::new();
    for line in lines {
        writeln!(text, "{line}").expect("format");
    }
    std::fs::write(path, text).expect("write the history");
}

/// `refold import` with arguments: (success, stdout summary or null, stderr).
fn import(args: &[&str]) -> (bool, Value, String) {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    let output = run(&all);
    let summary = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.success(), summary, text(&output.stderr))
}

async fn log(store: &dyn Store) -> Vec<RecordedEvent> {
    let page = store
        .read_all(0, 100_000, &EventFilter::default())
        .await
        .expect("read the log");
    page.events
}

/// The log holds exactly `lines`, in their order, with their ids, versions, times and payloads.
fn assert_log_is(events: &[RecordedEvent], lines: &[Value]) {
    assert_eq!(events.len(), lines.len(), "events in the log");
    for (i, (event, line)) in events.iter().zip(lines).enumerate() {
        let id = match &line["_id"] {
            Value::String(id) => id.clone(),
            oid => oid["$oid"].as_str().expect("an ObjectId").to_owned(),
        };
        assert_eq!(event.position, i as u64 + 1);
        assert_eq!(event.id, id);
        assert_eq!(
            event.aggregate_id,
            line["aggregateId"].as_str().expect("stream")
        );
        assert_eq!(event.version, line["version"].as_u64().expect("version"));
        assert_eq!(
            refold::domain::time::iso8601_millis(event.timestamp_ms),
            line["timestamp"].as_str().expect("time")
        );
        let data: Value = serde_json::from_str(&event.data).expect("data");
        assert_eq!(data, line["eventData"]);
    }
}

/// Importing `file` into `uri` fails with `error`, and the store's head stays at `head`.
async fn refused(file: &Path, uri: &str, error: &str, store: &dyn Store, head: u64) {
    let (ok, _, stderr) = import(&[&file.to_string_lossy(), "--store", uri]);
    assert!(!ok, "{} was imported", file.display());
    assert!(stderr.contains(error), "expected `{error}`: {stderr}");
    assert_eq!(
        store.head().await.expect("head"),
        head,
        "a failed import stored events"
    );
}

async fn a_history_imports_once_however_often_it_runs(uri: &str, sandbox: &Sandbox) {
    let lines = history(40, 6);
    let file = sandbox.path("history.jsonl");
    write_lines(&file, &lines);
    let file = file.to_string_lossy().into_owned();

    // A first run that stopped after 100 events (a crash: the file was cut short)...
    let partial = sandbox.path("partial.jsonl");
    write_lines(&partial, &lines[..100]);
    let (ok, summary, stderr) = import(&[
        &partial.to_string_lossy(),
        "--store",
        uri,
        "--batch-size",
        "30",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(summary["stored"], 100, "{summary}");

    // ...then the whole file: the rest is stored, nothing twice.
    let (ok, summary, stderr) = import(&[&file, "--store", uri, "--batch-size", "30"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        (
            summary["stored"].as_u64(),
            summary["present"].as_u64(),
            summary["streams"].as_u64()
        ),
        (Some(140), Some(100), Some(40)),
        "{summary}"
    );
    let store = refold::store::open(uri).await.expect("open");
    assert_log_is(&log(store.as_ref()).await, &lines);

    // A third run finds everything and stores nothing.
    let (ok, summary, stderr) = import(&[&file, "--store", uri]);
    assert!(ok, "{stderr}");
    assert_eq!(
        (summary["stored"].as_u64(), summary["present"].as_u64()),
        (Some(0), Some(240))
    );
    assert_eq!(store.head().await.expect("head"), 240);

    // A history that differs from the store's at one event: named, and its batch not stored.
    let mut differs = lines.clone();
    differs[150]["_id"] = json!("someone-else");
    differs.push(json!({
        "aggregateId": "payment-new", "aggregateType": "Payment", "eventType": "PaymentInitiated",
        "version": 1, "timestampMs": 1_734_700_000_000i64,
    }));
    let other = sandbox.path("differs.jsonl");
    write_lines(&other, &differs);
    refused(
        &other,
        uri,
        "line 151: stream `payment-30` holds version 4 already, as another event",
        store.as_ref(),
        240,
    )
    .await;

    // An id the store holds already, for an event of another stream: named, nothing stored.
    let reused = sandbox.path("reused.jsonl");
    write_lines(
        &reused,
        &[json!({
            "_id": "event-1", "aggregateId": "payment-other", "aggregateType": "Payment",
            "eventType": "PaymentInitiated", "version": 1, "timestampMs": 1_734_700_000_000i64,
        })],
    );
    refused(
        &reused,
        uri,
        "line 1: event id `event-1` exists already",
        store.as_ref(),
        240,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_history_imports_into_the_embedded_store_once_however_often_it_runs() {
    let sandbox = Sandbox::new();
    a_history_imports_once_however_often_it_runs(&sandbox.uri("imported.db"), &sandbox).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_history_imports_into_mongodb_once_however_often_it_runs() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("import_jsonl");
    a_history_imports_once_however_often_it_runs(&uri, &sandbox).await;
}

/// A stream missing a version, a version given twice, a malformed line: each error names its
/// line; a dry run reports it without creating the store, and a whole source checks clean.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_source_is_named_by_its_line_and_a_dry_run_stores_nothing() {
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("dry.db");
    let mut lines = history(5, 3);
    let file = sandbox.path("broken.jsonl");
    let path = file.to_string_lossy().into_owned();

    // payment-2 loses its version 2 (line 8): its version 3 (line 13) waits for it in vain.
    let gone = lines.remove(7);
    assert_eq!(gone["aggregateId"], "payment-2");
    write_lines(&file, &lines);
    let on_mongodb = mongo::fresh_uri("import_broken");
    for (dry, target) in [(true, &uri), (false, &uri), (false, &on_mongodb)] {
        let mut args = vec![path.as_str(), "--store", target.as_str()];
        if dry {
            args.push("--dry-run");
        }
        let (ok, _, stderr) = import(&args);
        assert!(!ok, "a broken stream was accepted");
        assert!(
            stderr.contains(
                "line 12: stream `payment-2` version 3 waits for version 2, which is missing"
            ),
            "{stderr}"
        );
        if dry {
            assert!(
                !sandbox.path("dry.db").exists(),
                "a dry run created the store"
            );
        }
    }
    // Once the line is back, the same command imports the whole history.
    lines.insert(7, gone);
    write_lines(&file, &lines);
    let (ok, summary, stderr) = import(&[&path, "--store", &uri, "--dry-run"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        (summary["events"].as_u64(), summary["streams"].as_u64()),
        (Some(15), Some(5))
    );
    // The failed runs stored nothing: the gap is found at the end of the source, before its
    // only batch was sent.
    for target in [&uri, &on_mongodb] {
        let (ok, summary, stderr) = import(&[&path, "--store", target]);
        assert!(ok, "{stderr}");
        assert_eq!(
            (summary["stored"].as_u64(), summary["present"].as_u64()),
            (Some(15), Some(0)),
            "{summary}"
        );
    }

    for (line, error) in [
        (
            json!({"aggregateId": "a", "aggregateType": "A", "eventType": "E", "version": 1}),
            "line 2: the event's time is missing",
        ),
        (
            json!({"aggregateId": "a", "aggregateType": "A", "eventType": "E", "version": 0, "timestampMs": 1}),
            "line 2: `version` must be a whole number, 1 or more",
        ),
        (
            json!({"aggregateId": "a", "aggregateType": "A", "eventType": "E", "timestampMs": 1, "eventData": [1]}),
            "line 2: `eventData` must be an object",
        ),
        (
            json!({"aggregateId": "payment-0", "aggregateType": "Payment", "eventType": "E", "version": 1, "timestampMs": 1}),
            "line 2: stream `payment-0` has version 1 twice",
        ),
    ] {
        let bad = sandbox.path("bad.jsonl");
        write_lines(&bad, &[lines[0].clone(), line]);
        let (ok, _, stderr) = import(&[&bad.to_string_lossy(), "--dry-run"]);
        assert!(
            !ok && stderr.contains(error),
            "expected `{error}`: {stderr}"
        );
    }
    std::fs::write(sandbox.path("bad.jsonl"), "{\"aggregateId\": \n").expect("write");
    let (ok, _, stderr) = import(&[&sandbox.path("bad.jsonl").to_string_lossy(), "--dry-run"]);
    assert!(
        !ok && stderr.contains("line 1: not a JSON object"),
        "{stderr}"
    );
}

/// A collection written the way seed 000's `MongoEventStore::appendEvents` writes it (ObjectId
/// ids, 32-bit versions, BSON dates, no position), one stream's versions out of time order (an
/// application server whose clock was behind): imported in time order with each stream's
/// versions in order, ids as hex text.
#[tokio::test(flavor = "multi_thread")]
async fn a_collection_in_the_seeds_shape_imports_from_mongodb() {
    let sandbox = Sandbox::new();
    let source = mongo::fresh_uri("import_source");
    let (_client, db) = mongo::database(&source).await;
    let start = 1_734_602_400_000i64;
    let mut docs = Vec::new();
    let mut ids = Vec::new();
    for i in 0..60i64 {
        let (stream, version) = (i % 12, (i / 12 + 1) as i32);
        // payment-7's version 3 was written by a server whose clock ran 100 s behind.
        let skew = if stream == 7 && version == 3 {
            -100_000
        } else {
            0
        };
        let id = ObjectId::new();
        ids.push((format!("payment-{stream}"), version as u64, id.to_hex()));
        docs.push(doc! {
            "_id": id,
            "aggregateId": format!("payment-{stream}"),
            "aggregateType": "Payment",
            "eventType": "PaymentProcessed",
            "eventData": { "amount": 100.0 + i as f64, "currency": "EUR", "status": "completed" },
            "version": version,
            "timestamp": DateTime::from_millis(start + i * 1000 + skew),
            "metadata": { "userId": "user-456", "organizationId": "org-789" },
        });
    }
    db.collection("events")
        .insert_many(docs)
        .await
        .expect("seed the collection");

    // A store where an application has inserted an event of one of the imported streams that
    // has no position yet: the import refuses rather than place later versions before it.
    let waiting = mongo::fresh_uri("import_waiting");
    refold::store::open(&waiting)
        .await
        .expect("create the store's indexes");
    let (_waiting_client, waiting_db) = mongo::database(&waiting).await;
    waiting_db
        .collection("events")
        .insert_one(doc! {
            "aggregateId": "payment-7", "aggregateType": "Payment", "eventType": "PaymentProcessed",
            "eventData": {}, "version": 1, "timestamp": DateTime::from_millis(start), "metadata": {},
        })
        .await
        .expect("an application's event");
    let (ok, _, stderr) = import(&["--from", &source, "--store", &waiting]);
    assert!(!ok, "the import went ahead of an event without a position");
    assert!(
        stderr.contains("stream `payment-7` has an event another application inserted (version 1) that has no position yet"),
        "{stderr}"
    );

    for target in [
        sandbox.uri("from_mongo.db"),
        mongo::fresh_uri("import_target"),
    ] {
        let (ok, summary, stderr) = import(&[
            "--from",
            &source,
            "--collection",
            "events",
            "--store",
            &target,
        ]);
        assert!(ok, "{stderr}");
        assert_eq!(summary["stored"], 60, "{summary}");
        let store = refold::store::open(&target).await.expect("open");
        let events = log(store.as_ref()).await;
        let mut got: Vec<(String, u64, String)> = events
            .iter()
            .map(|e| (e.aggregate_id.clone(), e.version, e.id.clone()))
            .collect();
        // Every stream's versions in order in the log.
        let mut last = std::collections::HashMap::new();
        for (stream, version, _) in &got {
            let previous = last.insert(stream.clone(), *version).unwrap_or(0);
            assert_eq!(*version, previous + 1, "{stream} out of order");
        }
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want, "ids and versions kept");
        let (ok, summary, stderr) = import(&["--from", &source, "--store", &target]);
        assert!(ok, "{stderr}");
        assert_eq!(
            (summary["stored"].as_u64(), summary["present"].as_u64()),
            (Some(0), Some(60))
        );
    }
}

/// `refold import` killed (SIGKILL) in the middle of a large import, then run again: the second
/// run stores exactly what the first did not, and the log is the file, event for event.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_killed_midway_continues_where_it_stopped() {
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("killed.db");
    let lines = history(5_000, 12);
    let file = sandbox.path("history.jsonl");
    write_lines(&file, &lines);
    let path = file.to_string_lossy().into_owned();
    let store = refold::store::open(&uri).await.expect("open");

    let mut first = refold_tests::refold()
        .args(["import", &path, "--store", &uri, "--batch-size", "2000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the import");
    let started = std::time::Instant::now();
    loop {
        let head = store.head().await.expect("head");
        if head >= 2_000 {
            break;
        }
        assert!(
            first.try_wait().expect("the import").is_none(),
            "the import ended before it could be killed"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the import stored nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    first.kill().expect("kill the import");
    first.wait().expect("reap the import");
    let stored_before = store.head().await.expect("head");
    assert!(
        stored_before < lines.len() as u64,
        "the import finished before it was killed ({stored_before} events)"
    );
    assert_eq!(stored_before % 2_000, 0, "a batch was stored in part");

    let (ok, summary, stderr) = import(&[&path, "--store", &uri, "--batch-size", "2000"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        (summary["stored"].as_u64(), summary["present"].as_u64()),
        (
            Some(lines.len() as u64 - stored_before),
            Some(stored_before)
        ),
        "{summary}"
    );
    assert_log_is(&log(store.as_ref()).await, &lines);
}

/// Another writer appends to a stream between two batches of an import (a host serving the same
/// store): the import's next event of that stream is found stored when it is that event, and
/// refused, naming it, when it is another; nothing is stored twice or over it.
async fn an_append_between_batches_is_met(uri: &str) {
    use refold::domain::json_object::JsonObject;
    use refold::domain::{ExpectedVersion, NewEvent};
    use refold::store::{ImportBatch, ImportedEvent, StreamAppend};

    let store = refold::store::open(uri).await.expect("open");
    let event = |version: u64, id: &str| ImportedEvent {
        aggregate_id: "payment-1".into(),
        version,
        id: Some(id.into()),
        aggregate_type: "Payment".into(),
        event_type: "PaymentProcessed".into(),
        timestamp_ms: 1_734_602_400_000,
        event_data: JsonObject::parse(r#"{"step": 1}"#).expect("an object"),
        metadata: JsonObject::empty(),
        origin: format!("line {version}"),
    };
    let batch = |events| ImportBatch::new(events).expect("a checked batch");
    let first = store
        .import(batch(vec![event(1, "imported-1")]))
        .await
        .expect("the first batch");
    assert_eq!(first.stored, 1);
    store
        .append_all(vec![StreamAppend {
            aggregate_id: "payment-1".into(),
            expected: ExpectedVersion::Exact(1),
            events: vec![NewEvent {
                id: Some("appended-2".into()),
                aggregate_type: "Payment".into(),
                event_type: "PaymentProcessed".into(),
                event_data: json!({}),
                metadata: json!({}),
                timestamp_ms: None,
            }],
        }])
        .await
        .expect("an append between the batches");

    let other = store
        .import(batch(vec![event(2, "imported-2")]))
        .await
        .expect_err("another event at version 2");
    assert!(
        other.to_string().contains(
            "line 2: stream `payment-1` holds version 2 already, as another event (id `appended-2`"
        ),
        "{other}"
    );
    let rest = store
        .import(batch(vec![event(2, "appended-2"), event(3, "imported-3")]).last())
        .await
        .expect("the same event at version 2, then version 3");
    assert_eq!((rest.stored, rest.present, rest.last_position), (1, 1, 3));
    let ids: Vec<String> = log(store.as_ref())
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["imported-1", "appended-2", "imported-3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_append_between_batches_is_met_on_both_stores() {
    let sandbox = Sandbox::new();
    an_append_between_batches_is_met(&sandbox.uri("between.db")).await;
    an_append_between_batches_is_met(&mongo::fresh_uri("import_between")).await;
}
