//! `refold new`, then `refold build`, then deploy into a running host: the scaffold's projection
//! replays the history, follows live events, and its own test passes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Where the scaffolds build: Rust's target folder (kept between runs) and a PATH with the
/// pinned componentize-qjs first.
struct Tools {
    target: PathBuf,
    path: OsString,
}

impl Tools {
    fn new() -> Self {
        let js = refold_tests::repo_root().join("example-projections/js/node_modules/.bin");
        let path = std::env::join_paths(std::iter::once(js).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .expect("PATH");
        Self {
            target: profile_dir().join("scaffold-target"),
            path,
        }
    }

    /// Give `command` the tools' environment.
    fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("CARGO_TARGET_DIR", &self.target)
            .env("PATH", &self.path)
    }

    /// `refold new LANGUAGE NAME`, `refold build` into `dist`, then the scaffold's own test
    /// (`test`); returns the component and the test's output.
    fn scaffold(
        &self,
        sandbox: &Sandbox,
        language: &str,
        name: &str,
        dist: &Path,
        test: &[&str],
    ) -> (PathBuf, Output) {
        let project = sandbox.path(name);
        let out = refold()
            .args(["new", language, name])
            .arg(&project)
            .args(["--event-type", "PaymentProcessed"])
            .output()
            .expect("refold new");
        assert!(out.status.success(), "{language}: {}", text(&out.stderr));
        let out = self
            .env(refold().arg("build").arg(&project).arg("--out").arg(dist))
            .output()
            .expect("refold build");
        assert!(out.status.success(), "{language}: {}", text(&out.stderr));
        let file = dist.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(file.is_file(), "{language}: no {}", file.display());
        // The scaffold's fixture passes through `refold test`, in every language.
        fixture_passes(
            refold()
                .arg("test")
                .arg(&file)
                .arg(project.join("fixtures")),
            language,
        );
        let tested = self
            .env(Command::new(test[0]).args(&test[1..]).current_dir(&project))
            .output()
            .expect("the scaffold's test");
        assert!(
            tested.status.success(),
            "{language}: {}{}",
            text(&tested.stdout),
            text(&tested.stderr)
        );
        (file, tested)
    }
}

/// `refold test` on a scaffold runs its fixture's two cases, and both pass.
fn fixture_passes(command: &mut Command, what: &str) {
    let out = command.output().expect("refold test");
    assert!(
        out.status.success() && text(&out.stdout).contains("2 cases: 2 passed"),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Wait until the read model `model` has counted three events in `all`; return its documents.
async fn totals(db: &Path, model: &str) -> Vec<(String, serde_json::Value)> {
    wait_until(&format!("the read model {model}"), || async move {
        dump(db).get(model).is_some_and(|docs| {
            docs.iter()
                .any(|(id, d)| id == "all" && d["count"] == json!(3))
        })
    })
    .await;
    dump(db)[model].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_projection_in_each_language_builds_deploys_and_folds() {
    let sandbox = Sandbox::new();
    let tools = Tools::new();
    let dist = sandbox.path("dist");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (component, tested) = tools.scaffold(&sandbox, "rust", "tally", &dist, &[&cargo, "test"]);
    assert!(text(&tested.stdout).contains("test tests::reads_the_amount ... ok"));
    // `refold test` in the projection folder builds it and runs its `fixtures`.
    fixture_passes(
        tools.env(refold().arg("test").current_dir(sandbox.path("tally"))),
        "refold test in the folder",
    );

    let project = sandbox.path("tally");
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
    std::fs::copy(&component, folder.join("tally.wasm")).expect("deploy");
    store
        .append("payment-2", ExpectedVersion::NoStream, vec![payment(0.5)])
        .await
        .expect("append");
    let db = sandbox.path("store.db");
    let rust = totals(&db, "tally__totals").await;
    assert_eq!(
        rust.iter()
            .find(|(id, _)| id == "all")
            .map(|(_, d)| d["amount"].clone()),
        Some(json!(13.0))
    );
    assert_eq!(
        rust.len(),
        4,
        "one document per stream, and `all`: {rust:?}"
    );

    // The same in Python, JavaScript and C: new, build, the scaffold's own test, deploy into the
    // running host; each replays the three events and gives the Rust scaffold's documents.
    for (language, name, test) in [
        ("python", "tally-py", ["python3", "-m", "unittest"]),
        ("js", "tally-js", ["node", "--test", "logic.test.js"]),
        ("c", "tally-c", ["make", "-s", "test"]),
    ] {
        let (component, _) = tools.scaffold(&sandbox, language, name, &dist, &test);
        let file = component.file_name().expect("file name");
        std::fs::copy(&component, folder.join(file)).expect("deploy");
        assert_eq!(
            totals(&db, &format!("{name}__totals")).await,
            rust,
            "{language}: the documents differ from Rust's"
        );
    }
}
