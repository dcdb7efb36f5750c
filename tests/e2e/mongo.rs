//! MongoDB as the store: the same read models as the embedded store, queryable by any MongoDB
//! client as in the seeds, and recovery from faults injected through the server.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use refold::cli::demo_data;
use refold::domain::ExpectedVersion;
use refold_tests::mongo::{self, admin, database, fail_commands};
use refold_tests::{
    EXAMPLE_NAMES, Running, STALL, Sandbox, append_things, catch_up, copy_log, dump_uri, examples,
    fixtures, projections, run, text, thing,
};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn example_read_models_are_identical_on_both_stores() {
    let sandbox = Sandbox::new();
    let dir = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("p"));
    let (embedded, mongodb) = (sandbox.uri("store.db"), mongo::fresh_uri("same"));
    let source = refold::store::open(&embedded).await.expect("open");
    for chunk in demo_data::generate(3_000, 11).chunks(500) {
        source.append_all(chunk.to_vec()).await.expect("append");
    }
    let target = refold::store::open(&mongodb).await.expect("open MongoDB");
    copy_log(source.as_ref(), target.as_ref()).await;

    for uri in [&embedded, &mongodb] {
        let out = catch_up(uri, &dir, &[]);
        assert!(out.status.success(), "{uri}: {}", text(&out.stderr));
    }
    let (a, b) = (dump_uri(&embedded).await, dump_uri(&mongodb).await);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (view, docs) in &a {
        assert!(!docs.is_empty(), "{view} is empty");
        assert_eq!(docs, &b[view], "{view} differs between the stores");
    }

    // Declared indexes exist on the physical collections.
    let (_client, db) = database(&mongodb).await;
    let indexes = db
        .collection::<Document>("payments__g1__payments")
        .list_index_names()
        .await
        .expect("indexes");
    for name in ["by_organization", "by_status"] {
        assert!(
            indexes.iter().any(|i| i == name),
            "{name} missing: {indexes:?}"
        );
    }
    let indexes = db
        .collection::<Document>("events")
        .list_index_names()
        .await
        .expect("indexes");
    for name in [
        "aggregate_version",
        "position",
        "event_type_position",
        "aggregate_type_timestamp",
    ] {
        assert!(
            indexes.iter().any(|i| i == name),
            "{name} missing: {indexes:?}"
        );
    }

    // The seeds' statistics aggregation (seed 000) runs unchanged on the payment view: dates are
    // BSON dates, so the range match works.
    let from = DateTime::parse_rfc3339_str("2025-01-01T00:00:00Z").expect("date");
    let to = DateTime::parse_rfc3339_str("2026-01-01T00:00:00Z").expect("date");
    let pipeline = [
        doc! { "$match": { "organizationId": "org-003", "processedAt": { "$gte": from, "$lte": to } } },
        doc! { "$group": { "_id": "$status", "count": { "$sum": 1 }, "totalAmount": { "$sum": "$amount" } } },
    ];
    let groups: Vec<Document> = db
        .collection::<Document>("payments__payments")
        .aggregate(pipeline)
        .await
        .expect("aggregate")
        .try_collect()
        .await
        .expect("aggregate");
    let completed = groups
        .iter()
        .find(|g| g.get_str("_id") == Ok("completed"))
        .expect("completed payments of org-003");
    let expected = a["payments__payments"]
        .iter()
        .filter(|(_, d)| d["organizationId"] == "org-003" && d["status"] == "completed")
        .count() as i32;
    assert!(expected > 0);
    assert_eq!(completed.get_i32("count").expect("count"), expected);
    let stats = db
        .collection::<Document>("payments__org_stats")
        .find_one(doc! { "_id": "org-003" })
        .await
        .expect("find");
    assert_eq!(
        stats.and_then(|s| s.get_i32("processedCount").ok()),
        Some(expected)
    );
}

/// Poll `refold status` until the projection's checkpoint reaches `position`; fails once the
/// checkpoint has stood still for [`STALL`].
pub(crate) fn wait_for_checkpoint(uri: &str, projection: &str, position: u64) {
    let mut last = None;
    let mut moved = Instant::now();
    loop {
        let out = run(&["status", "--store", uri, "--json"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let checkpoint = status["generations"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["projection"] == projection))
            .and_then(|g| g["checkpoint"].as_u64())
            .unwrap_or(0);
        if checkpoint >= position {
            return;
        }
        if last != Some(checkpoint) {
            last = Some(checkpoint);
            moved = Instant::now();
        }
        assert!(
            moved.elapsed() < STALL,
            "{projection} stuck at {checkpoint} for {STALL:?}, waiting for {position}: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_processing_survives_server_faults() {
    let _fail_points = mongo::fail_points().await;
    let Some(server) = mongo::fault_server() else {
        println!("skipped: REFOLD_TEST_MONGODB_URI is set without REFOLD_TEST_MONGODB_FAULTS=1");
        return;
    };
    let sandbox = Sandbox::new();
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    let uri = server.fresh_uri("faults");
    let store = refold::store::open(&uri).await.expect("open");
    let log = sandbox.path("host.log");
    let mut host = Running::logged(
        &[
            "run",
            "--store",
            &named(&uri, HOST),
            "--projections",
            &dir.to_string_lossy(),
        ],
        &[("REFOLD_LOG", "info")],
        &log,
    );
    let mut appended = 0u64;
    let mut append = async |label: &str, n: usize| {
        appended += n as u64;
        append_things(store.as_ref(), label, n).await
    };

    let head = append("warmup", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // A failing getMore on the change stream (resumable, then not).
    fail_commands(&uri, &["getMore"], 3, 6, &["ResumableChangeStreamError"]).await;
    let head = append("getmore-resumable", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);
    fail_commands(&uri, &["getMore"], 2, 2, &[]).await;
    let head = append("getmore-fatal", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // The stream's history is gone from the oplog (ChangeStreamHistoryLost).
    fail_commands(&uri, &["getMore"], 1, 286, &[]).await;
    let head = append("history-lost", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // Reopening the stream fails for a while.
    fail_commands(&uri, &["aggregate"], 3, 6, &[]).await;
    fail_commands(&uri, &["getMore"], 1, 2, &[]).await;
    let head = append("aggregate", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // Document reads fail inside host calls: the batch is retried as the host's failure, never
    // charged to the event. The fail point is the host's alone (the test's own `refold status`
    // polls would use it up otherwise), and aimed past the page read, at the guest's reads;
    // the host log must show one of those failing.
    let mut rounds = 0;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("host failure: reading by_")
    {
        rounds += 1;
        assert!(
            rounds <= 20,
            "no guest read met the fail point in 20 rounds"
        );
        fail_guest_reads(&uri).await;
        let head = append(&format!("find-{rounds}"), 1).await;
        wait_for_checkpoint(&uri, "healthy", head);
        mongo::fail_point_off(&uri).await;
    }
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains("event failed") && !logged.contains("one event at a time"),
        "a failed store read was charged to the projection:\n{logged}"
    );

    // Batch commits hit transient transaction errors and retry.
    fail_commands(
        &uri,
        &["commitTransaction"],
        2,
        112,
        &["TransientTransactionError"],
    )
    .await;
    let head = append("commit", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // The primary steps down.
    let _ = admin(&uri, doc! { "replSetStepDown": 5, "force": true }).await;
    let head = append("stepdown", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // Dropping the events collection invalidates the change stream; new events still arrive.
    let (_client, db) = database(&uri).await;
    db.collection::<Document>("events")
        .drop()
        .await
        .expect("drop events");
    let head = append("after-invalidate", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    host.kill();
    let models = dump_uri(&uri).await;
    let total: u64 = models["healthy__by_type"]
        .iter()
        .map(|(_, d)| d["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, appended, "every event handled exactly once");
    assert_eq!(models["healthy__by_stream"].len() as u64, appended);
}

/// Fail the host's `find` commands that follow its read of a page (the counter, then the
/// events): the guest's reads of its documents. SecantusDB skips the first two and fails the
/// next two; mongod has no such mode, so there half of the host's finds fail at random until
/// the fail point is turned off.
async fn fail_guest_reads(uri: &str) {
    let mode = if std::env::var("REFOLD_TEST_MONGODB_URI").is_ok() {
        doc! { "activationProbability": 0.5 }
    } else {
        doc! { "skip": 2, "times": 2 }
    };
    admin(
        uri,
        doc! {
            "configureFailPoint": "failCommand",
            "mode": mode,
            "data": { "failCommands": ["find"], "appName": HOST, "errorCode": 50 },
        },
    )
    .await
    .expect("configure fail point");
}

/// A client that appends one event per stream with ids of its own and, like any careful client,
/// sends an append again until it gets an answer: the store must never write it twice.
struct RetryingClient {
    store: std::sync::Arc<dyn refold::store::Store>,
    sent: u64,
    retries: u64,
}

impl RetryingClient {
    async fn append(&mut self, label: &str, n: usize) -> u64 {
        let started = Instant::now();
        let mut last = 0;
        for i in 0..n {
            let stream = format!("{label}-{i}");
            let event = refold::domain::NewEvent {
                id: Some(format!("{stream}-event")),
                ..thing(label)
            };
            let deadline = Instant::now() + Duration::from_secs(120);
            last = loop {
                match self
                    .store
                    .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
                    .await
                {
                    Ok(result) => break result.last_position,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "{stream} never appended: {e}");
                        self.retries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            self.sent += 1;
        }
        println!("{label}: {n} appends in {:?}", started.elapsed());
        last
    }
}

/// The `appName` of the test's client and of the host, to aim fail points at one of them.
const CLIENT: &str = "refold-test-client";
pub(crate) const HOST: &str = "refold-test-host";

/// `uri` for a client named `app`.
pub(crate) fn named(uri: &str, app: &str) -> String {
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}appName={app}")
}

/// Appends and batches under dropped connections, failing inserts and commits, step-downs and
/// network cuts between the host and the server: every event is stored once and folded once.
#[tokio::test(flavor = "multi_thread")]
async fn appends_and_batches_survive_faults_exactly_once() {
    let _fail_points = mongo::fail_points().await;
    let Some(server) = mongo::fault_server() else {
        println!("skipped: REFOLD_TEST_MONGODB_URI is set without REFOLD_TEST_MONGODB_FAULTS=1");
        return;
    };
    let sandbox = Sandbox::new();
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    let uri = server.fresh_uri("exactly_once");
    let proxy = refold_tests::proxy::Proxy::start(server.address()).await;
    let host_uri = named(&server.through_proxy(&uri, proxy.port()), HOST);
    let _host = Running::logged(
        &[
            "run",
            "--store",
            &host_uri,
            "--projections",
            &dir.to_string_lossy(),
        ],
        &[("REFOLD_LOG", "info")],
        &sandbox.path("host.log"),
    );
    let mut client = RetryingClient {
        store: refold::store::open(&named(&uri, CLIENT))
            .await
            .expect("open"),
        sent: 0,
        retries: 0,
    };
    let head = client.append("warmup", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // The client's inserts and commits lose their connection (the store retries the
    // transaction or the commit), or fail outright (the client sends the append again).
    let dropped = || doc! { "closeConnection": true };
    // MaxTimeMSExpired: neither transient nor a change of primary, so the store gives up at
    // once. (A ShutdownInProgress error would make the driver wait its server selection timeout
    // for a primary, 30 s.)
    let failed = || doc! { "errorCode": 50 };
    for (label, command, data) in [
        ("insert-dropped", "insert", dropped()),
        ("commit-dropped", "commitTransaction", dropped()),
        ("insert-failed", "insert", failed()),
        ("commit-failed", "commitTransaction", failed()),
    ] {
        mongo::fail_app_commands(&uri, CLIENT, &[command], 3, data).await;
        client.append(label, 10).await;
    }
    // The commit happens but its answers say the outcome is unknown, more often than the store
    // asks again: the client gets an error for an append that is stored, and sends it again.
    let lost = mongo::lost_answers();
    mongo::fail_app_commands(&uri, CLIENT, &["commitTransaction"], 25, lost).await;
    let retries = client.retries;
    client.append("answer-lost", 3).await;
    assert!(
        client.retries > retries,
        "the lost answer reached the client"
    );
    // The host's reads and batch commits lose their connection, or fail.
    mongo::fail_app_commands(
        &uri,
        HOST,
        &["find", "update", "commitTransaction"],
        4,
        dropped(),
    )
    .await;
    let head = client.append("batch-dropped", 10).await;
    wait_for_checkpoint(&uri, "healthy", head);
    mongo::fail_app_commands(&uri, HOST, &["commitTransaction"], 3, failed()).await;
    let head = client.append("batch-failed", 10).await;
    wait_for_checkpoint(&uri, "healthy", head);

    // Step-downs during appends.
    let stepping = {
        let uri = uri.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = admin(&uri, doc! { "replSetStepDown": 2, "force": true }).await;
            }
        })
    };
    client.append("stepdown-appends", 30).await;
    stepping.await.expect("step-downs");

    // A backlog built while the host is cut off, then step-downs while it folds it in.
    proxy.cut();
    let head = client.append("backlog", 100).await;
    proxy.heal();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = admin(&uri, doc! { "replSetStepDown": 2, "force": true }).await;
    }
    wait_for_checkpoint(&uri, "healthy", head);

    // Network cuts while live: open connections drop and new ones are refused for a while.
    let connections = proxy.forwarded();
    for round in 0..3 {
        let appending = {
            let store = client.store.clone();
            tokio::spawn(async move {
                let mut client = RetryingClient {
                    store,
                    sent: 0,
                    retries: 0,
                };
                client.append(&format!("cut-{round}"), 20).await;
                client.sent
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(500 + 500 * round)).await;
        proxy.heal();
        client.sent += appending.await.expect("appender");
    }
    let head = client.append("after-cuts", 5).await;
    wait_for_checkpoint(&uri, "healthy", head);
    assert!(
        proxy.forwarded() >= connections + 3,
        "the host reconnected after each cut"
    );

    // Every event once in the log, every event once in the read model.
    let (_client, db) = database(&uri).await;
    let events = db.collection::<Document>("events");
    let stored = events.count_documents(doc! {}).await.expect("count");
    assert_eq!(
        stored, client.sent,
        "one event per append ({} retries)",
        client.retries
    );
    assert_eq!(head, client.sent, "gap-free positions");
    let models = dump_uri(&uri).await;
    let total: u64 = models["healthy__by_type"]
        .iter()
        .map(|(_, d)| d["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, client.sent, "every event folded exactly once");
    assert_eq!(models["healthy__by_stream"].len() as u64, client.sent);
    println!(
        "{} events appended through faults, {} client retries",
        client.sent, client.retries
    );
}

/// A slow store is the host's problem, not the guest's: with every `find` of the host held for
/// 1.2 s by a fail point, a guest whose reads wait on those finds still meets an 800 ms
/// deadline, because the time the host spends waiting on the store for the guest's reads is not
/// counted against it. (Before, every batch missed its deadline and the projection was parked
/// as if its code had looped.)
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_store_does_not_make_a_guest_miss_its_deadline() {
    let _fail_points = mongo::fail_points().await;
    const SLOW: &str = "refold-slow-reads";
    let Some(server) = mongo::fault_server() else {
        println!("skipped: REFOLD_TEST_MONGODB_URI is set without REFOLD_TEST_MONGODB_FAULTS=1");
        return;
    };
    let sandbox = Sandbox::new();
    let uri = server.fresh_uri("slow_reads");
    let store = refold::store::open(&uri).await.expect("open MongoDB store");
    for i in 0..3 {
        store
            .append(
                &format!("thing-{i}"),
                ExpectedVersion::NoStream,
                vec![thing("Normal")],
            )
            .await
            .expect("append");
    }
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("projections"));
    admin(
        &uri,
        doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["find"], "appName": SLOW, "blockConnection": true, "blockTimeMS": 1200 },
        },
    )
    .await
    .expect("configure fail point");
    let out = catch_up(
        &named(&uri, SLOW),
        &dir,
        &["--batch-deadline-ms", "800", "--on-failure", "*=stop:1"],
    );
    mongo::fail_point_off(&uri).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generations = store.all_generations().await.expect("generations");
    let healthy = generations
        .iter()
        .find(|g| g.projection == "healthy")
        .expect("a generation for healthy");
    assert_eq!(healthy.checkpoint, 3);
    assert_eq!(healthy.last_error, None);
}
