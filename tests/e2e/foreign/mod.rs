//! Events other applications write into the MongoDB `events` collection themselves, the way
//! seed 000's PHP event store does (no position): the sequencer gives each one position, gap-free
//! and in commit order, beside `refold append`, across a kill -9 of the host.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use refold_tests::{
    Running, Sandbox, catch_up, copy_log, dump_uri, examples, mongo, projections, repo_root, run,
    text,
};

use crate::mongo::wait_for_checkpoint;

/// Run the seed-000 writer: `transactions` appends, its `seq` counting from `first_seq`.
fn writer(
    uri: &str,
    database: &str,
    transactions: usize,
    seed: u64,
    first_seq: u64,
) -> std::process::Child {
    Command::new("python3")
        .arg(repo_root().join("tests/e2e/foreign/seed_writer.py"))
        .args([
            uri,
            database,
            &transactions.to_string(),
            &seed.to_string(),
            &first_seq.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the seed-000 writer (python3 with pymongo: run scripts/setup)")
}

/// The database a test URI names.
fn database_name(uri: &str) -> String {
    let path = uri.split('/').nth(3).expect("a database in the URI");
    path.split('?').next().unwrap_or(path).to_owned()
}

fn finished(child: std::process::Child) -> u64 {
    let output = child.wait_with_output().expect("the writer");
    assert!(
        output.status.success(),
        "the writer failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
        .trim()
        .parse()
        .expect("the writer's count")
}

fn host(uri: &str, dir: &Path, log: &Path) -> Running {
    Running::logged(
        &[
            "run",
            "--store",
            uri,
            "--projections",
            &dir.to_string_lossy(),
        ],
        &[("REFOLD_LOG", "info")],
        log,
    )
}

async fn all_events(db: &mongodb::Database) -> Vec<Document> {
    db.collection::<Document>("events")
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read events")
}

/// Who holds the sequencer's lease.
async fn lease_owner(db: &mongodb::Database) -> String {
    let lease = db
        .collection::<Document>("counters")
        .find_one(doc! { "_id": "sequencer" })
        .await
        .expect("read the lease")
        .expect("a lease");
    lease.get_str("owner").expect("an owner").to_owned()
}

fn int(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_other_applications_insert_get_one_position_each_in_commit_order() {
    let sandbox = Sandbox::new();
    let uri = mongo::fresh_uri("foreign");
    let database = database_name(&uri);
    let (_client, db) = mongo::database(&uri).await;
    let dir = projections(examples(), &["payments"], &sandbox.path("p"));

    // The application's history before Refold is brought in: no position anywhere.
    let before = finished(writer(&uri, &database, 30, 1, 0));
    // A document the log cannot hold: its payload is text. Marked, passed over, blocking nothing.
    db.collection::<Document>("events")
        .insert_one(doc! {
            "aggregateId": "payment-broken", "aggregateType": "Payment", "eventType": "PaymentProcessed",
            "eventData": "oops", "version": 1, "timestamp": mongodb::bson::DateTime::now(), "metadata": {},
        })
        .await
        .expect("insert a malformed document");

    let mut running = host(&uri, &dir, &sandbox.path("host-1.log"));
    // The application goes on writing, `refold append` writes beside it (to streams of its own
    // and to the ones they share), and the host is killed and started again meanwhile.
    let live = writer(&uri, &database, 150, 2, before);
    let appender = {
        let uri = uri.clone();
        tokio::task::spawn_blocking(move || {
            let mut appended = 0u64;
            for i in 0..24 {
                let stream = match i % 3 {
                    0 => format!("payment-shared-{}", i % 4),
                    _ => format!("payment-refold-{i}"),
                };
                let data =
                    format!(r#"{{"amount": {i}.5, "currency": "EUR", "status": "completed"}}"#);
                // An append to a shared stream waits for the sequencer, up to 15 s; while the
                // host is killed and its lease expires, it may say so: it is sent again then
                // (nothing was stored). A host killed mid-commit holds the sequencer's lease in
                // its open transaction until the server ends it (60 s idle on mongod), so the
                // append is sent for up to 90 s.
                let append = || {
                    run(&[
                        "append",
                        "--store",
                        &uri,
                        "--stream",
                        &stream,
                        "--aggregate-type",
                        "Payment",
                        "--event-type",
                        "PaymentProcessed",
                        "--data",
                        &data,
                        "--metadata",
                        r#"{"organizationId": "org-refold"}"#,
                    ])
                };
                let mut out = append();
                for _ in 0..5 {
                    if out.status.success() || !text(&out.stderr).contains("has had no position") {
                        break;
                    }
                    out = append();
                }
                assert!(out.status.success(), "refold append: {}", text(&out.stderr));
                appended += 1;
            }
            appended
        })
    };
    let store = refold::store::open(&uri).await.expect("open");
    let started = Instant::now();
    while store.head().await.expect("head") < before + 60 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nothing was stamped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _running = host(&uri, &dir, &sandbox.path("host-2.log"));
    let written = before + finished(live);
    let appended = appender.await;
    if appended.is_err() {
        for log in ["host-1.log", "host-2.log"] {
            let lines = std::fs::read_to_string(sandbox.path(log)).unwrap_or_default();
            for line in lines
                .lines()
                .filter(|l| l.contains("sequencer") || l.contains("WARN") || l.contains("ERROR"))
            {
                println!("DEBUG {log}: {}", &line[..line.len().min(400)]);
            }
        }
    }
    let appended = appended.expect("appender");
    let total = written + appended;

    // Every event gets a position: the head reaches the number of events.
    let started = Instant::now();
    while store.head().await.expect("head") < total {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "events left without a position"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_checkpoint(&uri, "payments", total);
    // The restarted host took the sequencer's lease over from the killed one.
    let log = std::fs::read_to_string(sandbox.path("host-2.log")).unwrap_or_default();
    assert!(log.contains("sequencer: holding the lease"), "{log}");

    let docs = all_events(&db).await;
    let rejected: Vec<&Document> = docs
        .iter()
        .filter(|d| d.contains_key("refoldRejected"))
        .collect();
    assert_eq!(rejected.len(), 1, "one malformed document");
    assert_eq!(
        rejected[0].get_str("aggregateId").ok(),
        Some("payment-broken")
    );
    assert!(
        rejected[0]
            .get_str("refoldRejected")
            .is_ok_and(|r| r.contains("eventData")),
        "{:?}",
        rejected[0]
    );
    // Exactly one position each, gap-free.
    let mut positions: Vec<i64> = docs.iter().filter_map(|d| int(d, "position")).collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=total as i64).collect::<Vec<_>>(),
        "positions 1..={total}"
    );
    assert_eq!(docs.len() as u64, total + 1);
    // Each stream's versions in position order, and the writer's events in its commit order.
    let mut by_position: Vec<&Document> =
        docs.iter().filter(|d| d.contains_key("position")).collect();
    by_position.sort_by_key(|d| int(d, "position"));
    let mut versions: HashMap<&str, i64> = HashMap::new();
    let mut last_seq = -1;
    for doc in &by_position {
        let stream = doc.get_str("aggregateId").expect("stream");
        let version = int(doc, "version").expect("version");
        let previous = versions.insert(stream, version).unwrap_or(0);
        assert_eq!(
            version,
            previous + 1,
            "{stream}: version {version} after {previous}"
        );
        if let Some(seq) = doc
            .get_document("metadata")
            .ok()
            .and_then(|m| int(m, "seq"))
        {
            assert!(
                seq > last_seq,
                "the writer's event {seq} is placed after its event {last_seq}"
            );
            last_seq = seq;
        }
    }
    assert_eq!(
        last_seq + 1,
        written as i64,
        "every event of the writer placed"
    );
    let events = store
        .read_all(0, 100_000, &refold::domain::EventFilter::default())
        .await
        .expect("read the log");
    assert_eq!(
        events.events.len() as u64,
        total,
        "the log reads every stamped event"
    );

    // The read model equals a clean replay of the same log.
    let clean = sandbox.uri("clean.db");
    let clean_store = refold::store::open(&clean).await.expect("open clean");
    copy_log(store.as_ref(), clean_store.as_ref()).await;
    let out = catch_up(&clean, &dir, &[]);
    assert!(out.status.success(), "clean replay: {}", text(&out.stderr));
    assert_eq!(
        dump_uri(&uri).await,
        dump_uri(&clean).await,
        "live read model differs from a replay"
    );
}

/// Two sequencers on one store (two hosts): one holds the lease and stamps; every event still
/// gets exactly one position, gap-free, and when the holder stops, the other takes over.
#[tokio::test(flavor = "multi_thread")]
async fn two_sequencers_on_one_store_give_each_event_one_position() {
    use refold::store::mongo::MongoStore;
    let uri = mongo::fresh_uri("two_sequencers");
    let database = database_name(&uri);
    let (_client, db) = mongo::database(&uri).await;
    let (first, second) = (
        MongoStore::open(&uri).await.expect("open"),
        MongoStore::open(&uri).await.expect("open"),
    );
    let (a, b) = (
        first.spawn_sequencer("a".into()),
        second.spawn_sequencer("b".into()),
    );
    let written = finished(writer(&uri, &database, 60, 3, 0));
    let wait_for = async |count: u64| {
        let started = Instant::now();
        while refold::store::EventLog::head(&first).await.expect("head") < count {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "events left without a position"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for(written).await;
    let holder = lease_owner(&db).await;
    // The holder stops (and gives the lease up); the other stamps what comes next.
    let (holding, waiting) = if holder == "a" { (a, b) } else { (b, a) };
    holding.stop().await;
    let more = finished(writer(&uri, &database, 20, 4, written));
    wait_for(written + more).await;
    waiting.stop().await;
    let docs = all_events(&db).await;
    let mut positions: Vec<i64> = docs.iter().filter_map(|d| int(d, "position")).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=(written + more) as i64).collect::<Vec<_>>());
    assert_ne!(lease_owner(&db).await, holder, "the lease did not move");
}

/// A collection an application wrote from servers whose clocks differ: a stream's version 2 has
/// an earlier time than its version 1. The first pass, in time order, still gives each stream's
/// versions positions in version order.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_pass_keeps_each_streams_versions_in_order() {
    use mongodb::bson::DateTime;
    use refold::store::mongo::MongoStore;
    let uri = mongo::fresh_uri("skewed_clocks");
    let (_client, db) = mongo::database(&uri).await;
    let event = |stream: &str, version: i32, at: i64| {
        doc! {
            "aggregateId": stream, "aggregateType": "Payment", "eventType": "PaymentProcessed",
            "eventData": { "amount": 1.0 }, "version": version,
            "timestamp": DateTime::from_millis(1_734_602_400_000 + at), "metadata": {},
        }
    };
    db.collection::<Document>("events")
        .insert_many([
            event("skewed", 1, 100_000),
            event("skewed", 2, 50_000),
            event("plain", 1, 75_000),
            event("skewed", 3, 150_000),
        ])
        .await
        .expect("insert");
    let store = MongoStore::open(&uri).await.expect("open");
    let sequencer = store.spawn_sequencer("only".into());
    let started = Instant::now();
    while refold::store::EventLog::head(&store).await.expect("head") < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "events left without a position"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sequencer.stop().await;
    let mut docs = all_events(&db).await;
    docs.sort_by_key(|d| int(d, "position"));
    let order: Vec<(String, i64)> = docs
        .iter()
        .map(|d| {
            (
                d.get_str("aggregateId").expect("stream").to_owned(),
                int(d, "version").expect("version"),
            )
        })
        .collect();
    let skewed: Vec<i64> = order
        .iter()
        .filter(|(s, _)| s == "skewed")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(skewed, [1, 2, 3], "positions in order {order:?}");
}
