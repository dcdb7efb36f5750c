//! Upcasting through the real binary on both stores: seed 000's `PaymentProcessed` (v1) read as
//! `PaymentSettled` (v2) by the `payment-settled` upcaster, in front of the `settlements`
//! projection, which is written against v2 only. A history of both shapes is folded alike, on
//! replay and live; other upcaster bytes, and no upcaster, each build a new generation beside
//! the active one; a second upcaster of the same name is refused; an event the upcaster fails
//! on fails for the projection under its failure policy. A hostile upcaster (loops, allocates
//! without bound, panics, lies about its types) fails only the events it misbehaves on.

use std::collections::BTreeMap;
use std::path::Path;

use refold::domain::{ExpectedVersion, NewEvent};
use refold::store::{Store, StreamAppend};
use refold_tests::{
    Running, Sandbox, catch_up, dump_uri, fixtures, mongo, payment, projections, run, text, thing,
    upcasting, wait_until,
};
use serde_json::{Value, json};

/// A payment: (cents, currency, organization).
type Payment = (i64, String, String);

/// Payment `i` recorded in v1 (two of three) or v2 shape; what `settlements` should make of it.
fn shaped(i: usize) -> (NewEvent, Payment) {
    let cents = (i % 50) as i64 * 100 + 25;
    let currency = if i.is_multiple_of(2) { "EUR" } else { "USD" };
    let organization = format!("org-{}", i % 4);
    let event = if i.is_multiple_of(3) {
        payment(
            "PaymentSettled",
            &organization,
            json!({ "amount": { "cents": cents, "currency": currency }, "method": "iban" }),
        )
    } else {
        payment(
            "PaymentProcessed",
            &organization,
            json!({ "amount": cents as f64 / 100.0, "currency": currency, "method": "card" }),
        )
    };
    (event, (cents, currency.to_owned(), organization))
}

/// Append payments `from..from + count` in one call; what each should become, by stream.
async fn history(store: &dyn Store, from: usize, count: usize) -> BTreeMap<String, Payment> {
    let mut expected = BTreeMap::new();
    let appends = (from..from + count)
        .map(|i| {
            let (event, settled) = shaped(i);
            expected.insert(format!("payment-{i}"), settled);
            StreamAppend {
                aggregate_id: format!("payment-{i}"),
                expected: ExpectedVersion::NoStream,
                events: vec![event],
            }
        })
        .collect();
    store.append_all(appends).await.expect("append");
    expected
}

/// What the read models served under the stable names hold: the settlements, and the totals
/// per organization as (count, cents per currency).
async fn served(uri: &str) -> (BTreeMap<String, Payment>, BTreeMap<String, Value>) {
    let models = dump_uri(uri).await;
    let settlements = models
        .get("settlements__settlements")
        .map(|docs| {
            docs.iter()
                .map(|(id, d)| {
                    let payment = (
                        d["cents"].as_i64().expect("cents"),
                        d["currency"].as_str().expect("currency").to_owned(),
                        d["organizationId"]
                            .as_str()
                            .expect("organization")
                            .to_owned(),
                    );
                    (id.clone(), payment)
                })
                .collect()
        })
        .unwrap_or_default();
    let totals = models
        .get("settlements__org_totals")
        .map(|docs| {
            docs.iter()
                .map(|(id, d)| (id.clone(), json!([d["settledCount"], d["cents"]])))
                .collect()
        })
        .unwrap_or_default();
    (settlements, totals)
}

fn totals_of(payments: &BTreeMap<String, Payment>) -> BTreeMap<String, Value> {
    let mut totals: BTreeMap<String, (u64, BTreeMap<String, i64>)> = BTreeMap::new();
    for (cents, currency, organization) in payments.values() {
        let entry = totals.entry(organization.clone()).or_default();
        entry.0 += 1;
        *entry.1.entry(currency.clone()).or_default() += cents;
    }
    totals
        .into_iter()
        .map(|(org, (count, cents))| (org, json!([count, cents])))
        .collect()
}

async fn assert_served(uri: &str, expected: &BTreeMap<String, Payment>, what: &str) {
    let (settlements, totals) = served(uri).await;
    assert_eq!(settlements.len(), expected.len(), "{what}: settlements");
    assert!(settlements == *expected, "{what}: settlements differ");
    assert_eq!(totals, totals_of(expected), "{what}: totals");
}

/// The generations of `projection` in `refold status --json`.
fn generations_of(uri: &str, projection: &str) -> Vec<Value> {
    let out = run(&["status", "--json", "--store", uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    status["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .filter(|g| g["projection"] == projection)
        .cloned()
        .collect()
}

/// The generations of `settlements`: (number, state, upcasters).
fn generations(uri: &str) -> Vec<(u64, String, Vec<String>)> {
    generations_of(uri, "settlements")
        .iter()
        .map(|g| {
            let upcasters = g["upcasters"]
                .as_array()
                .expect("upcasters")
                .iter()
                .map(|h| h.as_str().expect("hash").to_owned())
                .collect();
            (
                g["generation"].as_u64().expect("number"),
                g["state"].as_str().expect("state").to_owned(),
                upcasters,
            )
        })
        .collect()
}

fn hash_of(path: &Path) -> String {
    refold::engine::code_hash(&std::fs::read(path).expect("read component"))
}

fn caught_up(uri: &str, dir: &Path, extra: &[&str]) -> String {
    let out = catch_up(uri, dir, extra);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stderr)
}

async fn old_and_new_payments_are_folded_alike(uri: &str) {
    let sandbox = Sandbox::new();
    let dir = projections(
        upcasting(),
        &["settlements", "payment_settled"],
        &sandbox.path("p"),
    );
    let upcaster = dir.join("payment_settled.wasm");
    let store = refold::store::open(uri).await.expect("open");
    let mut expected = history(store.as_ref(), 0, 600).await;

    // A replay folds v1 and v2 alike, behind the upcaster recorded with the generation.
    caught_up(uri, &dir, &[]);
    assert_served(uri, &expected, "replay").await;
    let first = hash_of(&upcaster);
    assert_eq!(
        generations(uri),
        [(1, "active".to_owned(), vec![first.clone()])]
    );

    // Live: a v1 payment appended while the host follows the log is read as v2.
    let dir_arg = dir.to_string_lossy().into_owned();
    let mut host = Running::start(&[
        "run",
        "--store",
        uri,
        "--projections",
        &dir_arg,
        "--no-http",
    ]);
    let live = history(store.as_ref(), 1000, 2).await;
    for (id, (cents, _, _)) in &live {
        wait_until(&format!("{id} settled live"), || async {
            store
                .get_document("settlements", "settlements", id)
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d["cents"] == *cents)
        })
        .await;
    }
    expected.extend(live);

    // Other bytes for the upcaster (the same code with a custom section added), dropped into
    // the folder of the running host: the projection builds a new generation beside the active
    // one, which serves until the new one takes over.
    let mut bytes = std::fs::read(&upcaster).expect("read upcaster");
    let name = b"refold-test";
    bytes.extend([0, (name.len() + 1 + 4) as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(b"edit");
    let hidden = dir.join(".payment_settled.wasm");
    std::fs::write(&hidden, &bytes).expect("write upcaster");
    std::fs::rename(&hidden, &upcaster).expect("replace upcaster");
    let second = hash_of(&upcaster);
    assert_ne!(first, second);
    let swapped = [
        (1, "retired".to_owned(), vec![first.clone()]),
        (2, "active".to_owned(), vec![second.clone()]),
    ];
    wait_until("generation 2 took over", || async {
        generations(uri) == swapped
    })
    .await;
    host.kill();
    assert_served(uri, &expected, "a changed upcaster").await;

    // A trace replays behind the generation's upcaster, and ends with the stored document.
    let out = run(&[
        "trace",
        "settlements",
        "settlements",
        "payment-1",
        "--json",
        "--store",
        uri,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace: Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
    assert_eq!(trace["matches"], true, "{trace:#}");
    assert_eq!(trace["steps"][0]["event"]["eventType"], "PaymentProcessed");
    assert_eq!(trace["document"]["cents"], 125, "{trace:#}");

    // A rollback returns to generation 1, behind the upcaster it was built with (loaded from the
    // code cache: the folder holds the other bytes, refused as rolled back), and it folds the
    // payments appended after the rollback.
    let out = run(&["rollback", "settlements", "--store", uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = history(store.as_ref(), 2000, 3).await;
    let log = caught_up(uri, &dir, &[]);
    assert!(log.contains("this code was rolled back"), "{log}");
    assert_eq!(
        generations(uri),
        [
            (1, "active".to_owned(), vec![first.clone()]),
            (2, "rolled_back".to_owned(), vec![second.clone()]),
        ]
    );
    expected.extend(after);
    assert_served(uri, &expected, "rolled back").await;

    // Without the upcaster, only the v2 payments are settled, in a generation of their own.
    std::fs::rename(&upcaster, sandbox.path("aside.wasm")).expect("move the upcaster aside");
    caught_up(uri, &dir, &[]);
    assert_eq!(generations(uri)[2], (3, "active".to_owned(), vec![]));
    let v2: BTreeMap<String, Payment> = expected
        .iter()
        .filter(|(id, _)| {
            let i: usize = id["payment-".len()..].parse().expect("number");
            i.is_multiple_of(3)
        })
        .map(|(id, p)| (id.clone(), p.clone()))
        .collect();
    assert_served(uri, &v2, "no upcaster").await;

    // Back as first built, with a second file of the same upcaster: one is refused by name, the
    // other builds.
    std::fs::copy(upcasting().join("payment_settled.wasm"), &upcaster)
        .expect("put the upcaster back");
    std::fs::create_dir_all(dir.join("copies")).expect("create a subfolder");
    std::fs::copy(&upcaster, dir.join("copies/again.wasm")).expect("copy the upcaster");
    let log = caught_up(uri, &dir, &[]);
    // Refused by the host on the embedded store, at publication on MongoDB.
    assert!(
        log.contains("two upcasters are named `payment-settled`")
            || log.contains("upcaster payment-settled is already published as"),
        "{log}"
    );
    assert_eq!(generations(uri)[3], (4, "active".to_owned(), vec![first]));
    assert_served(uri, &expected, "the upcaster back").await;
    std::fs::remove_file(dir.join("copies/again.wasm")).expect("remove the copy");

    // A v1 event the upcaster cannot read fails for the projection, under its policy.
    let bad = store
        .append(
            "payment-bad",
            ExpectedVersion::NoStream,
            vec![payment(
                "PaymentProcessed",
                "org-1",
                json!({ "amount": "twelve", "currency": "EUR" }),
            )],
        )
        .await
        .expect("append")
        .last_position;
    caught_up(uri, &dir, &["--on-failure", "settlements=skip:1"]);
    let out = run(&[
        "dead-letters",
        "list",
        "settlements",
        "--json",
        "--store",
        uri,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let letters: Value = serde_json::from_slice(&out.stdout).expect("dead letters JSON");
    let [letter] = letters.as_array().expect("letters").as_slice() else {
        panic!("one dead letter: {letters:#}");
    };
    assert_eq!(letter["position"], bad);
    assert_eq!(letter["eventType"], "PaymentProcessed");
    let error = letter["error"].as_str().expect("error");
    assert!(
        error.contains(&format!(
            "upcaster `payment-settled` failed at position {bad}"
        )) && error.contains("PaymentProcessed of payment-bad is not v1"),
        "{error}"
    );
    assert_served(uri, &expected, "after the dead letter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_payments_are_folded_alike_on_the_embedded_store() {
    let sandbox = Sandbox::new();
    old_and_new_payments_are_folded_alike(&sandbox.uri("upcasting.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_payments_are_folded_alike_on_mongodb() {
    old_and_new_payments_are_folded_alike(&mongo::fresh_uri("upcasting")).await;
}

/// An upcaster built against the first contract, `refold:projection@0.1.0`, runs unchanged on
/// this host: `healthy` (which counts every event by type) sees its `Legacy` events as `Modern`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_built_against_contract_0_1_0_runs_unchanged() {
    let bytes = std::fs::read(fixtures().join("upcaster_v010.wasm")).expect("fixture");
    let names = |name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
    assert!(names("refold:projection/types@0.1.0"));
    assert!(!names("refold:projection/types@0.1.1"));

    let sandbox = Sandbox::new();
    let events = vec![
        thing("Created"),
        thing("Legacy"),
        thing("Legacy"),
        thing("Created"),
    ];
    let (uri, dir) = behind_upcaster(&sandbox, "upcaster_v010", events).await;
    caught_up(&uri, &dir, &[]);
    assert_eq!(
        counts_by_type(&uri).await,
        BTreeMap::from([
            ("Created".to_owned(), json!(2)),
            ("Modern".to_owned(), json!(2))
        ])
    );
}

/// A store of its own holding `events` in the stream `thing-1`, and a projections folder with
/// `healthy` (which counts every event by type) behind the fixture `upcaster`: the store's URI
/// and the folder.
async fn behind_upcaster(
    sandbox: &Sandbox,
    upcaster: &str,
    events: Vec<NewEvent>,
) -> (String, std::path::PathBuf) {
    let uri = sandbox.uri(&format!("{upcaster}.db"));
    let store = refold::store::open(&uri).await.expect("open");
    store
        .append("thing-1", ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    drop(store);
    let dir = projections(fixtures(), &["healthy", upcaster], &sandbox.path("p"));
    (uri, dir)
}

/// What `healthy` counted, by event type.
async fn counts_by_type(uri: &str) -> BTreeMap<String, Value> {
    dump_uri(uri).await["healthy__by_type"]
        .iter()
        .map(|(id, d)| (id.clone(), d["count"].clone()))
        .collect()
}

/// The hostile upcaster in front of the healthy projection (which counts every event by type):
/// each event it misbehaves on becomes a dead letter naming it and what it did, the others are
/// read as it says, and the host reaches the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_upcaster_fails_only_the_events_it_misbehaves_on() {
    let sandbox = Sandbox::new();
    let legacy = |what: &str| {
        let mut event = thing("Legacy");
        event.event_data = json!({ "do": what });
        event
    };
    let events = vec![
        thing("Created"),
        legacy("nothing"),
        legacy("loop"),
        legacy("grow"),
        legacy("panic"),
        legacy("lie"),
        legacy("split"),
        legacy("drop"),
        thing("Created"),
    ];
    let (uri, dir) = behind_upcaster(&sandbox, "hostile_upcaster", events).await;
    caught_up(
        &uri,
        &dir,
        &[
            "--on-failure",
            "healthy=skip:1",
            "--batch-deadline-ms",
            "300",
            "--memory-mib",
            "32",
        ],
    );
    let out = run(&["dead-letters", "list", "healthy", "--json", "--store", &uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let letters: Value = serde_json::from_slice(&out.stdout).expect("dead letters JSON");
    let errors: Vec<(u64, String)> = letters
        .as_array()
        .expect("letters")
        .iter()
        .map(|l| {
            (
                l["position"].as_u64().expect("position"),
                l["error"].as_str().expect("error").to_owned(),
            )
        })
        .collect();
    let expected = [
        (3, "exceeded its deadline"),
        (4, "exceeded its memory limit"),
        (5, "unreachable"),
        (6, "returned an event of type `Undeclared`"),
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for ((position, error), (at, says)) in errors.iter().zip(expected) {
        assert_eq!(*position, at, "{errors:#?}");
        assert!(
            error.starts_with(&format!("upcaster `hostile` failed at position {at}: "))
                && error.contains(says),
            "{error}"
        );
    }
    // `nothing` read as one Modern, `split` as two, `drop` as none; no Legacy reaches it.
    assert_eq!(
        counts_by_type(&uri).await,
        BTreeMap::from([
            ("Created".to_owned(), json!(2)),
            ("Modern".to_owned(), json!(3))
        ])
    );
    let status = &generations_of(&uri, "healthy")[0];
    assert_eq!(status["checkpoint"], 9, "{status}");
}

/// An upcaster that imports WASI clocks and randomness gets a fresh instance per event: a batch
/// of many such events is read in full, none failing on the host's per-store instance limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_that_reads_the_clock_upcasts_a_whole_batch() {
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("clocked.db");
    let store = refold::store::open(&uri).await.expect("open");
    store
        .append(
            "thing-1",
            ExpectedVersion::NoStream,
            (0..40).map(|_| thing("Legacy")).collect(),
        )
        .await
        .expect("append");
    drop(store);
    let dir = projections(fixtures(), &["healthy"], &sandbox.path("p"));
    std::fs::copy(
        refold_tests::wasi_fixture().join("clocked_upcaster.wasm"),
        dir.join("clocked_upcaster.wasm"),
    )
    .expect("copy the upcaster");
    let log = caught_up(&uri, &dir, &["--on-failure", "healthy=skip:1"]);
    assert!(
        !log.contains("batch failed"),
        "the batch went through whole: {log}"
    );
    let out = run(&["dead-letters", "list", "healthy", "--json", "--store", &uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");
    let models = dump_uri(&uri).await;
    let counts: BTreeMap<&str, &Value> = models["healthy__by_type"]
        .iter()
        .map(|(id, d)| (id.as_str(), &d["count"]))
        .collect();
    assert_eq!(counts, BTreeMap::from([("Modern", &json!(40))]));
}

/// `refold test` builds the example's folder (the upcaster with the projection) and runs its
/// fixtures through them: a failing upcaster is a failure of kind `upcast`.
#[test]
fn refold_test_runs_fixtures_behind_the_upcaster() {
    let folder = refold_tests::repo_root().join("example-projections/upcasting");
    let out = refold_tests::refold()
        .arg("test")
        .arg(&folder)
        .output()
        .expect("run refold test");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("2 cases: 2 passed, 0 failed"), "{stdout}");
}
