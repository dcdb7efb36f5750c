//! Crash consistency: SIGKILL the real `refold` process at random moments during replay, live
//! processing, in-place swaps and generation cut-overs, restart it, and the read models must
//! equal a clean replay of the same log with the same code.
//!
//! Beside the four examples, the `counter` fixture is redeployed while the host runs: its
//! version 1 builds (codes a and b, swapped in place) for the first half of the cycles, then its
//! version 2 builds, which are built into a new generation from the origin and cut over to.
//!
//! `REFOLD_CRASH_CYCLES` raises the number of kill/restart cycles for long runs (e.g. 1000).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use refold::cli::demo_data;
use refold::domain::{ExpectedVersion, NewEvent};
use refold::store::StreamAppend;
use refold_tests::{
    EXAMPLE_NAMES, Running, Sandbox, catch_up, copy_log, dump_uri, examples, fixture, mongo,
    projections, text, wait_progressing,
};
use serde_json::{Value, json};

fn live_payment(cycle: usize, i: usize) -> StreamAppend {
    StreamAppend {
        aggregate_id: format!("payment-live-{cycle}-{i}"),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            id: None,
            aggregate_type: "Payment".into(),
            event_type: if i.is_multiple_of(7) {
                "PaymentFailed"
            } else {
                "PaymentProcessed"
            }
            .into(),
            event_data: json!({ "amount": 1.25 * i as f64, "currency": "EUR", "status": "completed", "error": "card_declined" }),
            metadata: json!({ "userId": "user-000001", "organizationId": format!("org-{:03}", 1 + i % 25) }),
            timestamp_ms: Some(1_767_225_600_000 + (cycle * 1000 + i) as i64),
        }],
    }
}

/// Put a build of the `counter` fixture in the folder the way a deploy tool does: written
/// beside, renamed into place.
fn deploy_counter(dir: &Path, build: &str) {
    let temp = dir.join(".counter.wasm.tmp");
    std::fs::copy(fixture(build), &temp).expect("copy counter build");
    std::fs::rename(&temp, dir.join("counter.wasm")).expect("rename counter build");
}

/// The read models of a store, without `counter__totals.code`: which code handled the latest
/// event depends on when a swap happened, by design.
async fn models(uri: &str) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut models = dump_uri(uri).await;
    for (_, doc) in models.get_mut("counter__totals").into_iter().flatten() {
        if let Some(doc) = doc.as_object_mut() {
            doc.remove("code");
        }
    }
    models
}

/// Documents that differ between two dumps (missing on either side, or unequal), by view.
fn differences(
    crashed: &BTreeMap<String, Vec<(String, Value)>>,
    clean: &BTreeMap<String, Vec<(String, Value)>>,
) -> Vec<String> {
    let mut found = Vec::new();
    for view in crashed
        .keys()
        .chain(clean.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let index = |dump: &BTreeMap<String, Vec<(String, Value)>>| -> BTreeMap<String, Value> {
            dump.get(view)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        let (a, b) = (index(crashed), index(clean));
        for id in a
            .keys()
            .chain(b.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if a.get(id) != b.get(id) {
                found.push(format!(
                    "{view}/{id}: after crashes {:?}, clean {:?}",
                    a.get(id),
                    b.get(id)
                ));
            }
        }
    }
    found
}

/// Kill/restart cycles on the store at `crashed` over a history of `events` events, then a
/// clean replay of the same log into `clean`: the read models must be equal.
async fn crash_cycles(crashed: &str, clean: &str, events: usize) {
    let cycles: usize = std::env::var("REFOLD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed = rand::rng().random::<u64>();
    println!("crash test on {crashed}: seed {seed}, {cycles} cycles");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let sandbox = Sandbox::new();
    let dir = projections(examples(), &EXAMPLE_NAMES, &sandbox.path("projections"));
    let mut build = String::from("counter-v1");
    deploy_counter(&dir, &build);
    let store = refold::store::open(crashed).await.expect("open store");
    for chunk in demo_data::generate(events, seed).chunks(500) {
        store
            .append_all(chunk.to_vec())
            .await
            .expect("append history");
    }

    // A reader polls the counter's total under its stable name through every cycle: it must
    // never see a half-built generation (a count far below one it saw before), only counts
    // that lag the largest it saw by no more than the cycle's live appends racing it.
    let live_appends = Arc::new(AtomicU64::new(0));
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (store, live_appends, reading) = (
            store.clone(),
            Arc::clone(&live_appends),
            Arc::clone(&reading),
        );
        tokio::spawn(async move {
            let (mut largest, mut reads) = (0u64, 0u64);
            while reading.load(Ordering::Relaxed) {
                if let Ok(Some(total)) = store.get_document("counter", "totals", "all").await {
                    let count = total["count"].as_u64().unwrap_or(0);
                    let racing = live_appends.load(Ordering::Relaxed);
                    assert!(
                        count + racing >= largest,
                        "a reader saw the counter's total drop from {largest} to {count} ({racing} live appends): a half-built generation was served"
                    );
                    largest = largest.max(count);
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            reads
        })
    };

    let mut redeploys = 0;
    for cycle in 0..cycles {
        // On MongoDB the killed host's leases expire before the next host may take them: a
        // short lease, so that every cycle's host runs.
        let mut host = Running::start(&[
            "run",
            "--store",
            crashed,
            "--projections",
            &dir.to_string_lossy(),
            "--lease-ms",
            "300",
        ]);
        // Live appends race the replay and the live loop of the child.
        let appends: Vec<_> = (0..rng.random_range(0..200))
            .map(|i| live_payment(cycle, i))
            .collect();
        // Only this cycle's appends can race a cut-over: the host folded the earlier ones.
        live_appends.store(appends.len() as u64, Ordering::Relaxed);
        let appender = {
            let store = store.clone();
            tokio::spawn(async move {
                for append in appends {
                    store.append_all(vec![append]).await.expect("live append");
                }
            })
        };
        // Two cycles in three redeploy the counter while the host runs, and the kill often
        // lands within a few hundred milliseconds of it: during the load, the swap, the
        // generation's build or its cut-over. Version 2 arrives at half time.
        let kill_after = Duration::from_millis(rng.random_range(50..1_500));
        let redeploy = rng.random_bool(2.0 / 3.0).then(|| {
            let at = Duration::from_millis(rng.random_range(0..kill_after.as_millis() as u64));
            let version = if cycle * 2 < cycles { "v1" } else { "v2" };
            let code = if build.ends_with('b') { "" } else { "b" };
            (at, format!("counter-{version}{code}"))
        });
        match &redeploy {
            Some((at, next)) => {
                tokio::time::sleep(*at).await;
                deploy_counter(&dir, next);
                tokio::time::sleep(kill_after - *at).await;
            }
            None => tokio::time::sleep(kill_after).await,
        }
        host.kill();
        appender.await.expect("appender");
        if let Some((at, next)) = redeploy {
            println!("cycle {cycle}: {next} deployed after {at:?}, killed after {kill_after:?}");
            build = next;
            redeploys += 1;
        } else {
            println!("cycle {cycle}: killed after {kill_after:?}");
        }
    }

    let out = catch_up(crashed, &dir, &[]);
    assert!(
        out.status.success(),
        "final run failed: {}",
        text(&out.stderr)
    );
    reading.store(false, Ordering::Relaxed);
    let reads = reader
        .await
        .expect("the reader saw a half-built generation");
    assert!(reads > 0, "the reader never read the counter");

    let clean_store = refold::store::open(clean).await.expect("open clean store");
    copy_log(store.as_ref(), clean_store.as_ref()).await;
    let head = store.head().await.expect("head");
    assert_eq!(clean_store.head().await.expect("head"), head);
    let out = catch_up(clean, &dir, &[]);
    assert!(
        out.status.success(),
        "clean replay failed: {}",
        text(&out.stderr)
    );

    let (crashed_models, clean_models) = (models(crashed).await, models(clean).await);
    assert_eq!(
        crashed_models.len(),
        7,
        "one stable name per collection: {:?}",
        crashed_models.keys()
    );
    assert!(crashed_models.values().all(|docs| !docs.is_empty()));
    let counter_versions: Vec<(u32, String)> = store
        .generations("counter")
        .await
        .expect("generations")
        .into_iter()
        .map(|g| (g.version, format!("{:?}", g.state)))
        .collect();
    let found = differences(&crashed_models, &clean_models);
    println!(
        "crash test on {crashed}: {cycles} cycles, {redeploys} redeploys, counter generations \
         {counter_versions:?}, {head} events, {} differences (seed {seed})",
        found.len()
    );
    assert!(
        found.is_empty(),
        "{} documents differ after crashes (seed {seed}): {:#?}",
        found.len(),
        &found[..found.len().min(10)]
    );
    // The counter counted every event of the log exactly once, in the version deployed last.
    let totals = &crashed_models["counter__totals"];
    assert_eq!(totals[0].1["count"], json!(head), "{totals:?}");
    let version = if build.starts_with("counter-v2") {
        2
    } else {
        1
    };
    assert!(
        crashed_models["counter__by_stream"]
            .iter()
            .all(|(_, doc)| doc["version"] == json!(version)),
        "readers see the generation of version {version}"
    );
}
#[tokio::test(flavor = "multi_thread")]
async fn embedded_store_converges_to_a_clean_replay() {
    let sandbox = Sandbox::new();
    crash_cycles(&sandbox.uri("crashed.db"), &sandbox.uri("clean.db"), 20_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_store_converges_to_a_clean_replay() {
    // Smaller: SecantusDB is a Python server, many times slower than mongod per round trip.
    crash_cycles(
        &mongo::fresh_uri("crashed"),
        &mongo::fresh_uri("clean"),
        2_000,
    )
    .await;
}

/// A stream of one event, a `Gate` (which the counter's code `s` traps on) or a `Tick`.
fn one_event(stream: &str, gate: bool) -> StreamAppend {
    StreamAppend {
        aggregate_id: stream.to_owned(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            id: None,
            aggregate_type: "Thing".into(),
            event_type: if gate { "Gate" } else { "Tick" }.into(),
            event_data: json!({}),
            metadata: json!({}),
            timestamp_ms: None,
        }],
    }
}

/// Dead letters and their re-drive under SIGKILL: the counter's code `s` traps on `Gate` events
/// and skips them to dead letters; an operator asks for re-drives at random moments (they fail
/// again under code `s`, and succeed once code `b`, the same version, is swapped in at half
/// time); the host is killed at random moments throughout. In the end every event, gates
/// included, is counted exactly once and no dead letter is left: a dead letter is never lost,
/// never outlives its event's effect, and a re-drive is applied once.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_and_their_redrive_survive_kills() {
    let cycles: usize = std::env::var("REFOLD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed = rand::rng().random::<u64>();
    println!("dead-letter crash test: seed {seed}, {cycles} cycles");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("letters.db");
    let dir = sandbox.path("projections");
    std::fs::create_dir_all(&dir).expect("projections folder");
    deploy_counter(&dir, "counter-v2s");
    let store = refold::store::open(&uri).await.expect("open store");
    let history: Vec<StreamAppend> = (0..2_000)
        .map(|i| one_event(&format!("thing-{i}"), i % 40 == 7))
        .collect();
    for chunk in history.chunks(500) {
        store
            .append_all(chunk.to_vec())
            .await
            .expect("append history");
    }
    let mut swapped = false;
    for cycle in 0..cycles {
        let mut host = Running::start(&[
            "run",
            "--store",
            &uri,
            "--projections",
            &dir.to_string_lossy(),
        ]);
        let appends: Vec<StreamAppend> = (0..rng.random_range(0..100))
            .map(|i| one_event(&format!("live-{cycle}-{i}"), rng.random_bool(0.1)))
            .collect();
        let appender = {
            let store = store.clone();
            tokio::spawn(async move {
                for append in appends {
                    store.append_all(vec![append]).await.expect("live append");
                }
            })
        };
        let kill_after = Duration::from_millis(rng.random_range(200..2_000));
        let retry_at = Duration::from_millis(rng.random_range(0..kill_after.as_millis() as u64));
        tokio::time::sleep(retry_at).await;
        if !swapped && cycle * 2 >= cycles {
            deploy_counter(&dir, "counter-v2b");
            swapped = true;
        }
        let marked = store
            .request_dead_letter_retry("counter", None)
            .await
            .unwrap_or(0);
        tokio::time::sleep(kill_after - retry_at).await;
        host.kill();
        appender.await.expect("appender");
        println!(
            "cycle {cycle}: {marked} re-drive(s) asked after {retry_at:?}, killed after {kill_after:?}"
        );
    }
    if !swapped {
        deploy_counter(&dir, "counter-v2b");
    }
    let head = store.head().await.expect("head");
    let _host = Running::start(&[
        "run",
        "--store",
        &uri,
        "--projections",
        &dir.to_string_lossy(),
    ]);
    // Re-drives asked once more (those marked before the last kill stay marked); the probe
    // reports the letters left and the count, so the wait fails only when they stand still.
    let _ = store.request_dead_letter_retry("counter", None).await;
    wait_progressing(
        "every dead letter re-driven and the counter at the head",
        || async {
            let letters = store.count_dead_letters().await.unwrap_or_default();
            let left = letters.get("counter").copied().unwrap_or(0);
            let total = store
                .get_document("counter", "totals", "all")
                .await
                .ok()
                .flatten()
                .and_then(|t| t["count"].as_u64());
            assert!(
                total.is_none_or(|t| t <= head),
                "{total:?} events counted of {head} (seed {seed})"
            );
            match (left, total) {
                (0, Some(total)) if total == head => Ok(()),
                progress => Err(progress),
            }
        },
    )
    .await;
    let models = dump_uri(&uri).await;
    let by_stream = &models["counter__by_stream"];
    assert_eq!(by_stream.len() as u64, head, "one document per stream");
    assert!(
        by_stream.iter().all(|(_, d)| d["count"] == json!(1)),
        "every event counted exactly once (seed {seed})"
    );
}
