//! Failure policies on both stores: an event a projection keeps failing on is retried, then
//! either parks the projection (`stop`) or becomes a dead letter (`skip`) while processing goes
//! on; the manifest declares the policy and `--on-failure` overrides it; dead letters are listed,
//! re-driven by a running host with fixed code (exactly once) and discarded, through the CLI
//! and the API.

use std::path::Path;

use refold::store::{self, Store};
use refold_tests::{Sandbox, catch_up, fixture, mongo, run, text, thing, wait_until};
use serde_json::Value;

use crate::api::support::Host;

/// 10 ticks, a gate (position 11), 5 ticks, a gate (position 17), 3 ticks.
pub(crate) async fn history(store: &dyn Store) {
    let mut events = Vec::new();
    for (ticks, gate) in [(10, true), (5, true), (3, false)] {
        events.extend((0..ticks).map(|_| thing("Tick")));
        if gate {
            events.push(thing("Gate"));
        }
    }
    for (i, event) in events.into_iter().enumerate() {
        store
            .append(
                &format!("thing-{}", i % 3),
                refold::domain::ExpectedVersion::Any,
                vec![event],
            )
            .await
            .expect("append");
    }
}

fn folder(sandbox: &Sandbox, name: &str, component: &str) -> std::path::PathBuf {
    let dir = sandbox.path(name);
    std::fs::create_dir_all(&dir).expect("projections folder");
    std::fs::copy(fixture(component), dir.join("counter.wasm")).expect("copy component");
    dir
}

fn json(args: &[&str]) -> Value {
    let output = run(args);
    assert!(
        output.status.success(),
        "refold {args:?}: {}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// `refold dead-letters ARGS --store URI`.
fn dead_letters(uri: &str, args: &[&str]) -> std::process::Output {
    run(&[&["dead-letters"], args, &["--store", uri]].concat())
}

fn dead_positions(uri: &str) -> Vec<u64> {
    json(&["dead-letters", "list", "counter", "--json", "--store", uri])
        .as_array()
        .expect("list")
        .iter()
        .map(|l| l["position"].as_u64().expect("position"))
        .collect()
}

/// The `count` of `counter__totals/all`; null before the projection serves anything.
async fn total(uri: &str) -> Value {
    let store = store::open(uri).await.expect("open store");
    match store.get_document("counter", "totals", "all").await {
        Ok(document) => document.map_or(Value::Null, |d| d["count"].clone()),
        Err(refold::store::StoreError::NotFound(_)) => Value::Null,
        Err(e) => panic!("read totals: {e}"),
    }
}

/// A watching host with one component as `counter.wasm`, its API ready.
async fn serve(
    sandbox: &Sandbox,
    uri: &str,
    folder_name: &str,
    component: &str,
    extra: &[&str],
) -> Host {
    let dir = folder(sandbox, folder_name, component);
    Host::start_with(sandbox, uri, &dir, extra).await
}

async fn policies(uri_of: impl Fn(&str) -> String) {
    let sandbox = Sandbox::new();

    // Declared in the manifest: skip after 2 attempts.
    let uri = uri_of("declared");
    history(store::open(&uri).await.expect("open").as_ref()).await;
    let output = catch_up(&uri, &folder(&sandbox, "declared", "counter-v2s"), &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        total(&uri).await,
        18,
        "every event but the two gates folded in"
    );
    let letters = json(&["dead-letters", "list", "counter", "--json", "--store", &uri]);
    assert_eq!(dead_positions(&uri), [11, 17]);
    let first = &letters[0];
    assert_eq!(
        (
            first["eventType"].as_str(),
            first["attempts"].as_u64(),
            first["version"].as_u64()
        ),
        (Some("Gate"), Some(2), Some(2))
    );
    assert!(
        first["error"]
            .as_str()
            .is_some_and(|e| e.contains("gate closed at 11")),
        "{first}"
    );
    let status = json(&["status", "--json", "--store", &uri]);
    assert_eq!(status["generations"][0]["checkpoint"], 20);

    // Fixed code (same version: swapped in place) re-drives them, from the CLI and the API.
    let host = serve(&sandbox, &uri, "fixed", "counter-v2b", &[]).await;
    // The API lists them a page at a time.
    let mut after = String::new();
    let mut paged = Vec::new();
    loop {
        let (status, page) = host
            .get(&format!(
                "/api/projections/counter/dead-letters?limit=1{after}"
            ))
            .await;
        assert_eq!(status.as_u16(), 200, "{page}");
        let letters = page["deadLetters"].as_array().cloned().unwrap_or_default();
        assert!(letters.len() <= 1, "{page}");
        paged.extend(letters.iter().filter_map(|l| l["position"].as_u64()));
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(paged, [11, 17]);
    let output = dead_letters(&uri, &["retry", "counter", "--position", "11"]);
    assert!(
        text(&output.stdout).contains("1 dead letter(s) to re-drive"),
        "{}",
        text(&output.stderr)
    );
    wait_until("position 11 re-driven", || async {
        dead_positions(&uri) == [17] && total(&uri).await == 19
    })
    .await;
    let (status, body) = host
        .post(
            "/api/projections/counter/dead-letters/retry",
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["retrying"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    wait_until("every dead letter re-driven", || async {
        dead_positions(&uri).is_empty() && total(&uri).await == 20
    })
    .await;
    let (_, detail) = host.get("/api/projections/counter").await;
    assert_eq!(detail["deadLetters"], 0);
    drop(host);

    // The operator's override wins: the same code parks at the first gate.
    let uri = uri_of("override-stop");
    history(store::open(&uri).await.expect("open").as_ref()).await;
    let output = catch_up(
        &uri,
        &folder(&sandbox, "stop", "counter-v2s"),
        &["--on-failure", "*=stop:2"],
    );
    assert!(
        !output.status.success(),
        "a parked projection fails the run"
    );
    assert!(
        text(&output.stderr).contains("position 11"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        total(&uri).await,
        Value::Null,
        "parked before its first visible generation"
    );
    assert!(dead_positions(&uri).is_empty());
    let status = json(&["status", "--json", "--store", &uri]);
    assert_eq!(status["generations"][0]["checkpoint"], 10);
    assert!(
        status["generations"][0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("gate closed at 11"))
    );

    // Code whose manifest says nothing (stop after 3) skips when the operator says so.
    let uri = uri_of("override-skip");
    history(store::open(&uri).await.expect("open").as_ref()).await;
    let output = catch_up(
        &uri,
        &folder(&sandbox, "skip", "counter-v2"),
        &["--on-failure", "counter=skip:1"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(total(&uri).await, 18);
    let letters = json(&["dead-letters", "list", "--json", "--store", &uri]);
    assert_eq!(letters.as_array().map(Vec::len), Some(2));
    assert_eq!(letters[0]["attempts"], 1);

    // A re-drive that fails again keeps the dead letter, with one more attempt.
    let host = serve(
        &sandbox,
        &uri,
        "still-broken",
        "counter-v2",
        &["--on-failure", "counter=skip:1"],
    )
    .await;
    let output = dead_letters(&uri, &["retry", "counter", "--position", "11"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    wait_until("the re-drive of position 11 to fail again", || async {
        let letters = json(&["dead-letters", "list", "counter", "--json", "--store", &uri]);
        letters[0]["attempts"] == 2 && letters[0]["retryRequested"] == false
    })
    .await;
    assert_eq!(total(&uri).await, 18);
    drop(host);

    // Discard: an unknown position is refused and deletes nothing; then one; then the rest.
    let output = dead_letters(&uri, &["discard", "counter", "--position", "99"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("no dead letter at position 99"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(dead_positions(&uri), [11, 17]);
    let output = dead_letters(&uri, &["discard", "counter", "--position", "11"]);
    assert!(
        text(&output.stdout).contains("1 dead letter(s) discarded"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(dead_positions(&uri), [17]);
    let output = dead_letters(&uri, &["discard", "counter", "--all"]);
    assert!(output.status.success());
    assert!(dead_positions(&uri).is_empty());

    let output = run(&[
        "run",
        "--store",
        &uri,
        "--projections",
        &sandbox.path("skip").to_string_lossy(),
        "--exit-when-caught-up",
        "--on-failure",
        "counter=retry",
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("`retry` is not `stop` or `skip`"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_policies_on_the_embedded_store() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("stores");
    std::fs::create_dir_all(&base).expect("folder");
    let base = base.to_string_lossy().into_owned();
    policies(|name| {
        format!(
            "sqlite://{}",
            Path::new(&base).join(format!("{name}.db")).display()
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_policies_on_mongodb() {
    policies(|name| mongo::fresh_uri(&format!("policy-{name}"))).await;
}
