//! Crash consistency: SIGKILL the real `refold` process at random moments during replay and
//! live processing, restart it, and the read models must equal a clean replay of the same log.
//!
//! `REFOLD_CRASH_CYCLES` raises the number of kill/restart cycles for long runs.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use refold::cli::history;
use refold::domain::{ExpectedVersion, NewEvent};
use refold::store::StreamAppend;
use refold_tests::{
    EXAMPLE_NAMES, Running, Sandbox, catch_up, copy_log, dump_uri, examples, mongo, projections,
    text,
};
use serde_json::json;

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
    let store = refold::store::open(crashed).await.expect("open store");
    for chunk in history::generate(events, seed).chunks(500) {
        store
            .append_all(chunk.to_vec())
            .await
            .expect("append history");
    }

    for cycle in 0..cycles {
        let mut host = Running::start(&[
            "run",
            "--store",
            crashed,
            "--projections",
            &dir.to_string_lossy(),
        ]);
        // Live appends race the replay and the live loop of the child.
        let appends: Vec<_> = (0..rng.random_range(0..200))
            .map(|i| live_payment(cycle, i))
            .collect();
        let kill_after = Duration::from_millis(rng.random_range(50..1_500));
        let appender = {
            let store = store.clone();
            tokio::spawn(async move {
                for append in appends {
                    store.append_all(vec![append]).await.expect("live append");
                }
            })
        };
        tokio::time::sleep(kill_after).await;
        host.kill();
        appender.await.expect("appender");
        println!("cycle {cycle}: killed after {kill_after:?}");
    }

    let out = catch_up(crashed, &dir, &[]);
    assert!(
        out.status.success(),
        "final run failed: {}",
        text(&out.stderr)
    );

    let clean_store = refold::store::open(clean).await.expect("open clean store");
    copy_log(store.as_ref(), clean_store.as_ref()).await;
    assert_eq!(
        clean_store.head().await.expect("head"),
        store.head().await.expect("head")
    );
    let out = catch_up(clean, &dir, &[]);
    assert!(
        out.status.success(),
        "clean replay failed: {}",
        text(&out.stderr)
    );

    let (crashed_models, clean_models) = (dump_uri(crashed).await, dump_uri(clean).await);
    assert_eq!(
        crashed_models.len(),
        5,
        "one stable name per collection: {:?}",
        crashed_models.keys()
    );
    assert!(crashed_models.values().all(|docs| !docs.is_empty()));
    for (view, docs) in &clean_models {
        let other = crashed_models
            .get(view)
            .unwrap_or_else(|| panic!("{view} missing after crashes"));
        assert_eq!(
            other.len(),
            docs.len(),
            "{view}: document count differs (seed {seed})"
        );
        for (a, b) in other.iter().zip(docs) {
            assert_eq!(a, b, "{view}: document differs after crashes (seed {seed})");
        }
    }
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
