//! Hostile guests (built as real components): each fails cleanly with an error naming the
//! projection and the position, while a healthy projection beside them reaches the head.

use std::path::Path;

use refold::domain::ExpectedVersion;
use refold_tests::{
    Sandbox, catch_up, dump, fixtures, projections, run, text, thing, wasi_fixture,
};
use serde_json::{Value, json};

/// 60 normal events with one poison event after the 40th, in a new store; returns the poison
/// event's position.
async fn poisoned_history(sandbox: &Sandbox, file: &str) -> u64 {
    let store = sandbox.store(file).await;
    let mut poison = 0;
    for i in 0..61 {
        let (stream, kind) = if i == 40 {
            ("thing-poison".to_owned(), "Poison")
        } else {
            (format!("thing-{i}"), "Normal")
        };
        let result = store
            .append(&stream, ExpectedVersion::NoStream, vec![thing(kind)])
            .await
            .expect("append");
        if i == 40 {
            poison = result.last_position;
        }
    }
    poison
}

/// Run the projections of `dir` over the store `file` until every one is live or parked, under a
/// batch deadline of `deadline_ms` and a 32 MiB memory cap; a parked one must make `run` fail.
/// Returns `refold status --json`.
fn parked(sandbox: &Sandbox, file: &str, dir: &Path, deadline_ms: u64) -> Value {
    let uri = sandbox.uri(file);
    let deadline = deadline_ms.to_string();
    let out = catch_up(
        &uri,
        dir,
        &["--batch-deadline-ms", &deadline, "--memory-mib", "32"],
    );
    assert!(
        !out.status.success(),
        "stopped projections in {file} must make `run` fail"
    );
    let out = run(&["status", "--store", &uri, "--json"]);
    assert!(
        text(&out.stderr).is_empty(),
        "status wrote to stderr: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_guests_fail_alone_and_name_the_position() {
    let sandbox = Sandbox::new();
    let poison = poisoned_history(&sandbox, "store.db").await;
    // Every hostile guest but the looper fails by something other than time, so they run under
    // a deadline that no honest batch can miss on a slow or busy machine (the grower copies
    // 17 MiB through its updates: a short deadline would race it to the size limit).
    let hostile = [
        "memory-bomb",
        "trapper",
        "undeclared",
        "bad-json",
        "grower",
        "recurser",
        "bad-utf8",
        "bloater",
    ];
    let mut names = vec!["healthy", "sprawler"];
    names.extend(hostile);
    let dir = projections(fixtures(), &names, &sandbox.path("projections"));
    projections(wasi_fixture(), &["wasi_files", "dialer"], &dir);
    let status = parked(&sandbox, "store.db", &dir, 60_000);
    // The looper never returns, so it misses any deadline by any margin: it runs alone, in a
    // store of its own, under a short one.
    assert_eq!(poisoned_history(&sandbox, "looper.db").await, poison);
    let looper_dir = projections(fixtures(), &["looper"], &sandbox.path("looper"));
    let looper_status = parked(&sandbox, "looper.db", &looper_dir, 300);
    let generation = |name: &str| {
        let status = if name == "looper" {
            &looper_status
        } else {
            &status
        };
        status["generations"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["projection"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no generation for {name}: {status}"))
    };
    let healthy = generation("healthy");
    assert_eq!(healthy["checkpoint"], 61);
    assert_eq!(healthy["state"], "active");
    assert_eq!(healthy["lastError"], Value::Null);

    let expected_cause = [
        ("looper", "exceeded its deadline"),
        ("memory-bomb", "memory limit"),
        (
            "trapper",
            "trapped: wasm trap: wasm `unreachable` instruction executed: the guest panicked at",
        ),
        ("undeclared", "collection `not_declared` is not declared"),
        ("bad-json", "invalid document"),
        (
            "grower",
            "bytes after the update; at most 15728640 are allowed",
        ),
        ("recurser", "call stack exhausted"),
        ("bad-utf8", "utf-8"),
        (
            "bloater",
            "invalid document: document has 17825803 bytes; at most 15728640 are allowed",
        ),
    ];
    for (name, cause) in expected_cause {
        let g = generation(name);
        let error = g["lastError"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no error: {g}"));
        assert!(
            error.starts_with(&format!("{name}: handle failed at position {poison}: ")),
            "{name}: {error}"
        );
        assert!(error.contains(cause), "{name}: {error}");
        // Everything before the poison event was folded in, nothing after.
        assert_eq!(g["checkpoint"], poison - 1, "{name}: {g}");
        assert_eq!(g["state"], "building", "{name}: {g}");
    }
    // Components refused at load time, before anything of them ran or was created.
    let refused = |component: &str| {
        status["refused"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["component"] == component))
            .and_then(|r| r["error"].as_str())
            .unwrap_or_else(|| panic!("{component} was not refused: {status}"))
            .to_owned()
    };
    let error = refused("sprawler.wasm");
    assert!(
        error.contains("declares 5000 collections; between 1 and 32 are allowed"),
        "{error}"
    );
    let error = refused("dialer.wasm");
    assert!(
        error.contains("imports `refold-evil:net/raw`, which Refold does not provide"),
        "{error}"
    );
    for name in ["sprawler", "dialer"] {
        assert!(
            status["generations"]
                .as_array()
                .is_some_and(|g| g.iter().all(|g| g["projection"] != name)),
            "{name} has a generation: {status}"
        );
    }

    // The panic's own message reaches the operator, not only "trapped".
    let trapper = generation("trapper");
    assert!(
        trapper["lastError"]
            .as_str()
            .is_some_and(|e| e.ends_with(&format!("poisoned at {poison}"))),
        "{trapper}"
    );

    let models = dump(&sandbox.path("store.db"));
    let by_type = &models["healthy__by_type"];
    let count = |t: &str| {
        by_type
            .iter()
            .find(|(id, _)| id == t)
            .map(|(_, d)| d["count"].clone())
    };
    assert_eq!(count("Normal"), Some(json!(60)));
    assert_eq!(count("Poison"), Some(json!(1)));
    assert_eq!(models["healthy__by_stream"].len(), 61);

    // The guest that reaches for the host through WASI ran, and got nothing: no file, no
    // directory, no socket, no environment, no arguments; its clock read the event's time.
    let loot = &models["wasi-files__loot"];
    assert_eq!(loot.len(), 61, "wasi-files saw every event");
    for (position, attempt) in loot {
        for field in ["file", "directory", "create", "socket", "listen"] {
            assert!(
                attempt[field]
                    .as_str()
                    .is_some_and(|o| o.starts_with("refused: ")),
                "event {position}: {field}: {attempt}"
            );
        }
        assert_eq!(attempt["environment"], 0, "{attempt}");
        assert_eq!(attempt["arguments"], 0, "{attempt}");
        assert_eq!(attempt["nowMs"], attempt["eventMs"], "{attempt}");
    }
}

/// The largest resident memory a running process has had, in bytes (`VmHWM`), while it runs.
fn peak_memory(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A guest whose `update-fields` list points 256 text values at one 4 MiB string (1 GiB if
/// each were copied) fails its event, and its host stays far below the gibibyte: wasmtime
/// copies at most 128 MiB from a guest per call (its hostcall fuel, left at the default).
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_cannot_make_the_host_copy_one_string_many_times() {
    let sandbox = Sandbox::new();
    let poison = poisoned_history(&sandbox, "store.db").await;
    let dir = projections(fixtures(), &["aliaser"], &sandbox.path("projections"));
    let (uri, folder) = (sandbox.uri("store.db"), dir.to_string_lossy().into_owned());
    let mut host = refold_tests::Running::start(&[
        "run",
        "--store",
        &uri,
        "--projections",
        &folder,
        "--exit-when-caught-up",
        "--memory-mib",
        "32",
    ]);
    let pid = host.0.id();
    let mut peak = 0;
    while host.alive() {
        peak = peak.max(peak_memory(pid).unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        peak < 512 * 1024 * 1024,
        "the host's memory peaked at {} MiB",
        peak >> 20
    );
    let out = run(&["status", "--store", &uri, "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let error = status["generations"][0]["lastError"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {status}"));
    assert!(
        error.starts_with(&format!("aliaser: handle failed at position {poison}: "))
            && error.contains("too much data is being copied between the host and the guest"),
        "{error}"
    );
}

/// On MongoDB a document past 16 MB cannot even be stored: one grown there by many small updates
/// fails its event as the guest's fault (the failure policy applies), never as a store error
/// retried forever, and the healthy projection beside it reaches the head.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_document_fails_its_event_on_mongodb() {
    let sandbox = Sandbox::new();
    let uri = refold_tests::mongo::fresh_uri("grower");
    let store = refold::store::open(&uri).await.expect("open MongoDB store");
    let mut poison = 0;
    for i in 0..16 {
        let kind = if i == 10 { "Poison" } else { "Normal" };
        let result = store
            .append(
                &format!("thing-{i}"),
                ExpectedVersion::NoStream,
                vec![thing(kind)],
            )
            .await
            .expect("append");
        if i == 10 {
            poison = result.last_position;
        }
    }
    let dir = projections(
        fixtures(),
        &["healthy", "grower"],
        &sandbox.path("projections"),
    );
    let out = catch_up(&uri, &dir, &["--on-failure", "*=stop:1"]);
    assert!(!out.status.success(), "the parked projection fails the run");
    let generations = store.all_generations().await.expect("generations");
    let of = |name: &str| {
        generations
            .iter()
            .find(|g| g.projection == name)
            .unwrap_or_else(|| panic!("no generation for {name}"))
    };
    assert_eq!(of("healthy").checkpoint, 16);
    let grower = of("grower");
    assert_eq!(grower.checkpoint, poison - 1);
    let error = grower.last_error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with(&format!("grower: handle failed at position {poison}: "))
            && error.contains("document `big` would have")
            && error.contains("at most 15728640 are allowed"),
        "{error}"
    );
}

/// A guest that calls its collections API with names outside its namespace gets each call
/// refused, naming the collection, and its event fails (here parked as a dead letter); nothing
/// reaches the store, and the healthy projection beside it folds in everything.
#[tokio::test(flavor = "multi_thread")]
async fn names_that_escape_the_namespace_are_refused() {
    const ESCAPES: [&str; 12] = [
        "../healthy__by_type",
        "healthy__by_type",
        "healthy__g1__by_type",
        "by_type",
        "$cmd",
        "system.views",
        "system.profile",
        "events",
        "generations",
        "mine\0",
        "mine/../../etc",
        "MINE",
    ];
    let sandbox = Sandbox::new();
    let uri = sandbox.uri("store.db");
    let store = sandbox.store("store.db").await;
    let mut escapes = 0;
    for name in ESCAPES {
        for call in ["put", "update", "get"] {
            let mut escape = thing("Escape");
            escape.event_data = json!({ "name": name, "call": call });
            store
                .append(
                    &format!("escape-{escapes}"),
                    ExpectedVersion::NoStream,
                    vec![thing("Normal"), escape],
                )
                .await
                .expect("append");
            escapes += 1;
        }
    }
    drop(store);
    let dir = projections(
        fixtures(),
        &["healthy", "escaper"],
        &sandbox.path("projections"),
    );
    let out = catch_up(&uri, &dir, &["--on-failure", "escaper=skip:1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(&["dead-letters", "list", "escaper", "--json", "--store", &uri]);
    let letters: Value = serde_json::from_slice(&out.stdout).expect("dead letters JSON");
    let letters = letters.as_array().expect("a list");
    assert_eq!(letters.len(), escapes, "one dead letter per escape");
    for (letter, (name, call)) in letters.iter().zip(
        ESCAPES
            .iter()
            .flat_map(|n| ["put", "update", "get"].map(|c| (*n, c))),
    ) {
        let error = letter["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("collection `{name}` is not declared")),
            "{call} on {name:?}: {error}"
        );
        assert!(!error.contains("ESCAPED"), "{error}");
    }
    let models = dump(&sandbox.path("store.db"));
    assert_eq!(
        models["escaper__mine"],
        [(
            "seen".to_owned(),
            json!({ "_id": "seen", "count": escapes })
        )]
    );
    assert_eq!(models["healthy__by_stream"].len(), escapes);
    assert_eq!(
        models.keys().collect::<Vec<_>>(),
        ["escaper__mine", "healthy__by_stream", "healthy__by_type"],
        "nothing else was created"
    );
}
