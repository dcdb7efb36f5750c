//! `refold new`, then `refold build`, then deploy into a running host: the scaffold's projection
//! replays the history, follows live events, and its own test passes.

use std::process::Command;

use refold::domain::{ExpectedVersion, NewEvent};
use refold_tests::{Running, Sandbox, dump, profile_dir, refold, text, wait_until};
use serde_json::json;

fn payment(amount: f64) -> NewEvent {
    NewEvent {
        id: None,
        aggregate_type: "Payment".into(),
        event_type: "PaymentProcessed".into(),
        event_data: json!({ "amount": amount }),
        metadata: json!({}),
        timestamp_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_projection_in_each_language_builds_deploys_and_folds() {
    let sandbox = Sandbox::new();
    let project = sandbox.path("tally");
    // Guest builds and the scaffold's own test share a target folder kept between runs.
    let target = profile_dir().join("scaffold-target");

    let out = refold()
        .args(["new", "rust", "tally"])
        .arg(&project)
        .args(["--event-type", "PaymentProcessed"])
        .output()
        .expect("refold new");
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (args, says) in [
        (
            vec!["new", "rust", "Tally"],
            "invalid projection name `Tally`",
        ),
        (
            vec!["new", "rust", "other", &project.to_string_lossy()],
            "exists and is not empty",
        ),
        (vec!["new", "cobol", "x"], "invalid value 'cobol'"),
        (
            vec!["build", &sandbox.path("nothing").to_string_lossy()],
            "has no Cargo.toml (Rust), app.py (Python), app.js (JavaScript) or app.c (C)",
        ),
    ] {
        let out = refold().args(&args).output().expect("refold new");
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }

    let dist = sandbox.path("dist");
    let out = refold()
        .arg("build")
        .arg(&project)
        .arg("--out")
        .arg(&dist)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("refold build");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dist.join("tally.wasm").is_file());

    let tested = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("test")
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo test in the scaffold");
    assert!(tested.status.success(), "{}", text(&tested.stderr));
    assert!(text(&tested.stdout).contains("test tests::reads_the_amount ... ok"));

    // History first, then the component dropped into a running host's folder, then live events.
    let store = sandbox.store("store.db").await;
    for (i, amount) in [10.0, 2.5].into_iter().enumerate() {
        store
            .append(
                &format!("payment-{i}"),
                ExpectedVersion::NoStream,
                vec![payment(amount)],
            )
            .await
            .expect("append");
    }
    let folder = sandbox.path("projections");
    std::fs::create_dir_all(&folder).expect("folder");
    let _host = Running::start(&[
        "run",
        "--store",
        &sandbox.uri("store.db"),
        "--projections",
        &folder.to_string_lossy(),
    ]);
    std::fs::copy(dist.join("tally.wasm"), folder.join("tally.wasm")).expect("deploy");
    store
        .append("payment-2", ExpectedVersion::NoStream, vec![payment(0.5)])
        .await
        .expect("append");
    let db = sandbox.path("store.db");
    wait_until("the scaffold's read model", || {
        let db = db.clone();
        async move {
            dump(&db).get("tally__totals").is_some_and(|docs| {
                docs.iter()
                    .any(|(id, d)| id == "all" && d["count"] == json!(3))
            })
        }
    })
    .await;
    let totals = dump(&db)["tally__totals"].clone();
    assert_eq!(
        totals
            .iter()
            .find(|(id, _)| id == "all")
            .map(|(_, d)| d["amount"].clone()),
        Some(json!(13.0))
    );
    assert_eq!(
        totals.len(),
        4,
        "one document per stream, and `all`: {totals:?}"
    );

    // The same in Python, JavaScript and C: new, build, the scaffold's own test, deploy into the
    // running host; each replays the three events and gives the Rust scaffold's documents.
    let js_tools = refold_tests::repo_root().join("example-projections/js/node_modules/.bin");
    let path = std::env::join_paths(std::iter::once(js_tools).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    for (language, name, test) in [
        ("python", "tally-py", ["python3", "-m", "unittest"]),
        ("js", "tally-js", ["node", "--test", "logic.test.js"]),
        ("c", "tally-c", ["make", "-s", "test"]),
    ] {
        let project = sandbox.path(name);
        let out = refold()
            .args(["new", language, name])
            .arg(&project)
            .args(["--event-type", "PaymentProcessed"])
            .output()
            .expect("refold new");
        assert!(out.status.success(), "{language}: {}", text(&out.stderr));
        let out = refold()
            .arg("build")
            .arg(&project)
            .arg("--out")
            .arg(&dist)
            .env("PATH", &path)
            .output()
            .expect("refold build");
        assert!(out.status.success(), "{language}: {}", text(&out.stderr));
        let file = format!("{}.wasm", name.replace('-', "_"));
        assert!(dist.join(&file).is_file(), "{language}: no {file}");
        let tested = Command::new(test[0])
            .args(&test[1..])
            .current_dir(&project)
            .output()
            .expect("the scaffold's test");
        assert!(
            tested.status.success(),
            "{language}: {}{}",
            text(&tested.stdout),
            text(&tested.stderr)
        );
        std::fs::copy(dist.join(&file), folder.join(&file)).expect("deploy");
        let model = format!("{name}__totals");
        wait_until(&format!("the {language} scaffold's read model"), || {
            let (db, model) = (db.clone(), model.clone());
            async move {
                dump(&db).get(&model).is_some_and(|docs| {
                    docs.iter()
                        .any(|(id, d)| id == "all" && d["count"] == json!(3))
                })
            }
        })
        .await;
        assert_eq!(
            dump(&db)[&model],
            totals,
            "{language}: the documents differ from Rust's"
        );
    }
}
