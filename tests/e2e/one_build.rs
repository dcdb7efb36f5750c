//! The demo (`cargo run --release`), the suite (`cargo test --release --workspace`), the
//! guest-component step of `scripts/test` and the benchmarks' build (`scripts/bench`) compile
//! the host's dependencies with one set of features and one profile, so that on a fresh machine the tests reuse the demo's build instead
//! of compiling wasmtime and cranelift a second time. A crate whose features differ between two
//! builds is compiled twice, with everything that depends on it: a dev-dependency that turned on
//! `fnv/std` once did that to gimli, cranelift and wasmtime.
//!
//! Cargo prints the units a command would compile with `--unit-graph`, which stable cargo takes
//! only with `RUSTC_BOOTSTRAP=1`; nothing is compiled. (Run the e2e tests alone with
//! `--workspace --test e2e`, not `-p refold-tests`: that resolves other features.)

use std::collections::BTreeSet;
use std::process::Command;

use refold_tests::{repo_root, text};
use serde_json::Value;

/// One compiled library: package, target, features and profile, as cargo would build it.
type Unit = (String, String, String, String);

/// The library units (no binaries, tests or build scripts) that `cargo ARGS` would compile.
fn units(args: &[&str]) -> BTreeSet<Unit> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .args(["-Z", "unstable-options", "--unit-graph"])
        .current_dir(repo_root())
        .env("RUSTC_BOOTSTRAP", "1")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        text(&out.stderr)
    );
    let graph: Value = serde_json::from_slice(&out.stdout).expect("unit graph JSON");
    graph["units"]
        .as_array()
        .expect("units")
        .iter()
        .filter(|u| u["mode"] == "build")
        .filter(|u| {
            u["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "proc-macro"))
        })
        .map(|u| {
            (
                u["pkg_id"].as_str().unwrap_or_default().to_owned(),
                u["target"]["name"].as_str().unwrap_or_default().to_owned(),
                u["features"].to_string(),
                u["profile"].to_string(),
            )
        })
        .collect()
}

#[test]
fn the_demo_the_suite_the_component_step_and_the_benchmarks_share_one_build() {
    // `cargo run --release` compiles what `cargo build --release` does (the default members);
    // cargo cannot print a unit graph for `run`.
    let demo = units(&["build", "--release"]);
    let suite = units(&["test", "--release", "--workspace", "--no-run"]);
    let components = units(&["test", "--release", "--workspace", "--test", "e2e"]);
    let bench = units(&["build", "--release", "--workspace"]);
    assert!(
        demo.iter().any(|u| u.1 == "wasmtime"),
        "the demo build has no wasmtime: {demo:?}"
    );
    let missing: Vec<&Unit> = demo.difference(&suite).collect();
    assert!(
        missing.is_empty(),
        "the suite would compile these demo units again with other features or settings: {missing:?}"
    );
    let missing: Vec<&Unit> = components.difference(&suite).collect();
    assert!(
        missing.is_empty(),
        "the component step would compile these again: {missing:?}"
    );
    let missing: Vec<&Unit> = bench.difference(&suite).collect();
    assert!(
        missing.is_empty(),
        "the benchmarks' build would compile these again: {missing:?}"
    );
}

#[test]
fn the_host_builds_without_the_mongodb_driver_when_its_feature_is_off() {
    let with = units(&["build", "--release", "-p", "refold"]);
    let without = units(&[
        "build",
        "--release",
        "-p",
        "refold",
        "--no-default-features",
    ]);
    assert!(
        with.iter().any(|u| u.1 == "mongodb"),
        "the default build has no MongoDB driver"
    );
    let driver: Vec<&Unit> = without
        .iter()
        .filter(|u| u.1 == "mongodb" || u.1.starts_with("mongocrypt"))
        .collect();
    assert!(
        driver.is_empty(),
        "without the `mongodb` feature the host still compiles {driver:?}"
    );
    assert!(
        without.iter().any(|u| u.1 == "bson"),
        "the document rules need the bson crate in every build"
    );
}
