//! The `refold` binary's command line: help, and bad input that must get a clear error and
//! change nothing.

use std::path::Path;
use std::process::{Command, Output};

fn refold(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refold"))
        .args(args)
        .env("REFOLD_LOG", "warn")
        .output()
        .expect("run refold")
}

/// `refold append --store URI --stream STREAM` followed by `rest`.
fn append(uri: &str, stream: &str, rest: &[&str]) -> Output {
    let mut args = vec!["append", "--store", uri, "--stream", stream];
    args.extend_from_slice(rest);
    refold(&args)
}

/// `refold append` of one `PaymentProcessed` event on `stream`, with `rest`.
fn payment(uri: &str, stream: &str, rest: &[&str]) -> Output {
    let mut args = vec![
        "--aggregate-type",
        "Payment",
        "--event-type",
        "PaymentProcessed",
    ];
    args.extend_from_slice(rest);
    append(uri, stream, &args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn head(uri: &str) -> u64 {
    let out = refold(&["status", "--store", uri, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    status["head"].as_u64().expect("head")
}

#[test]
fn every_command_with_a_store_names_both_uri_forms() {
    for command in [
        "run",
        "append",
        "status",
        "rebuild",
        "rollback",
        "pause",
        "resume",
        "dead-letters list",
        "dead-letters retry",
        "dead-letters discard",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = refold(&args);
        assert!(out.status.success(), "{command} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        for form in [
            "sqlite://PATH",
            "mongodb://HOST:PORT/DATABASE?replicaSet=NAME",
        ] {
            assert!(
                help.contains(form),
                "{command} --help does not name {form}: {help}"
            );
        }
    }
}

#[test]
fn every_command_explains_itself() {
    for (command, words) in [
        // The long descriptions show in `--help`, not only the one-line summaries.
        ("run", "swapped in place"),
        ("demo", "history"),
        ("append", "expected-version"),
        ("status", "refused to deploy"),
        ("build", "components"),
        ("new", "python3 -m unittest"),
        ("pause", "paused"),
        ("dead-letters", "re-drives"),
        ("rebuild", "generation"),
        ("rollback", "resumes from its own checkpoint"),
    ] {
        let out = refold(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains(words),
            "{command} --help does not mention {words}: {help}"
        );
    }
}

#[test]
fn unknown_store_scheme_is_refused_by_name() {
    let out = refold(&["status", "--store", "postgres://localhost/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unsupported store URI `postgres://localhost/x`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_projection_folder_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp");
    let uri = format!("sqlite://{}", dir.path().join("s.db").display());
    let out = refold(&[
        "run",
        "--store",
        &uri,
        "--projections",
        "/no/such/folder",
        "--exit-when-caught-up",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/no/such/folder does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn store_in_a_missing_folder_is_refused() {
    let out = refold(&["status", "--store", "sqlite:///no/such/folder/s.db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("folder /no/such/folder does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!Path::new("/no/such/folder").exists());
}

#[test]
fn malformed_events_change_nothing() {
    let dir = tempfile::tempdir().expect("temp");
    let db = dir.path().join("s.db");
    let uri = format!("sqlite://{}", db.display());

    let out = payment(&uri, "p-1", &["--data", "{bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--data is not valid JSON"),
        "{}",
        stderr(&out)
    );
    assert!(!db.exists(), "bad input must not even create the store");

    let out = payment(&uri, "p-1", &["--data", "[1]"]);
    assert!(
        stderr(&out).contains("--data must be a JSON object"),
        "{}",
        stderr(&out)
    );

    let ok = payment(
        &uri,
        "p-1",
        &[
            "--expected-version",
            "no_stream",
            "--data",
            r#"{"amount":1}"#,
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let result: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("append result");
    assert_eq!(
        result,
        serde_json::json!({ "firstPosition": 1, "lastPosition": 1, "version": 1 })
    );

    let file = dir.path().join("events.json");
    std::fs::write(
        &file,
        r#"[{"aggregateType":"Payment","eventType":"A"},{"aggregateType":"Payment"}]"#,
    )
    .expect("write");
    let out = append(&uri, "p-2", &["--file", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("event #2 is malformed"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        &file,
        r#"{"aggregateType":"Payment","eventType":"A","colour":"red"}"#,
    )
    .expect("write");
    let out = append(&uri, "p-2", &["--file", &file.to_string_lossy()]);
    assert!(
        stderr(&out).contains("unknown field `colour`"),
        "{}",
        stderr(&out)
    );

    let out = append(
        &uri,
        "p-1",
        &[
            "--expected-version",
            "banana",
            "--aggregate-type",
            "P",
            "--event-type",
            "E",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected version `banana`"),
        "{}",
        stderr(&out)
    );

    // Invalid Extended JSON, nesting past the parser's limit, an oversized event, and
    // expected versions that are not versions.
    for (data, says) in [
        (
            r#"{"at":{"$date":"yesterday"}}"#.to_owned(),
            r#"eventData: invalid $date value "yesterday""#,
        ),
        (
            r#"{"n":[{"$numberLong":"12x"}]}"#.to_owned(),
            r#"invalid $numberLong value "12x""#,
        ),
        (
            r#"{"o":{"$oid":"zz"}}"#.to_owned(),
            r#"invalid $oid value "zz""#,
        ),
        (
            format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200)),
            "recursion limit exceeded",
        ),
    ] {
        let out = payment(&uri, "p-3", &["--data", &data]);
        assert_eq!(out.status.code(), Some(1), "{data}");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    std::fs::write(
        &file,
        format!(
            r#"{{"aggregateType":"P","eventType":"Big","eventData":{{"x":"{}"}}}}"#,
            "a".repeat(1024 * 1024)
        ),
    )
    .expect("write");
    let out = append(&uri, "p-3", &["--file", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "Big: eventData and metadata take 1048586 bytes as JSON; at most 1048576 are allowed"
        ),
        "{}",
        stderr(&out)
    );
    for version in ["-1", "1.5", "Exact", "99999999999999999999", " 3"] {
        let out = append(
            &uri,
            "p-1",
            &[
                &format!("--expected-version={version}"),
                "--aggregate-type",
                "P",
                "--event-type",
                "E",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{version}");
        assert!(
            stderr(&out).contains(&format!("expected version `{version}`")),
            "{}",
            stderr(&out)
        );
    }

    assert_eq!(head(&uri), 1, "only the valid append was stored");
}

#[test]
fn a_conflict_exits_with_its_own_code() {
    let dir = tempfile::tempdir().expect("temp");
    let uri = format!("sqlite://{}", dir.path().join("s.db").display());
    let append = |expected: &str| payment(&uri, "p-1", &["--expected-version", expected]);
    assert!(append("no_stream").status.success());
    let out = append("no_stream");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains(
            "concurrency conflict on stream `p-1`: expected version no_stream, stream is at 1"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(head(&uri), 1);
}

/// The README's first command, `cargo run --release -- demo`, needs the workspace's default
/// members to hold exactly one binary, `refold` (the benchmark binary must not be one of them).
#[test]
fn cargo_run_at_the_root_runs_refold() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", stderr(&out));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let defaults = metadata["workspace_default_members"]
        .as_array()
        .expect("default members");
    let binaries: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| defaults.contains(&p["id"]))
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.contains(&"bin".into()))
        })
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(binaries, ["refold"]);
}

/// `THP_enabled` of a running `refold run`, with `env` set.
#[cfg(target_os = "linux")]
fn huge_pages_of_a_running_host(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp");
    let uri = format!("sqlite://{}", dir.path().join("s.db").display());
    let folder = dir.path().join("projections");
    std::fs::create_dir(&folder).expect("folder");
    let mut host = Command::new(env!("CARGO_BIN_EXE_refold"))
        .args(["run", "--store", &uri, "--no-http", "--projections"])
        .arg(&folder)
        .env_remove("MIMALLOC_ALLOW_THP")
        .envs(env.iter().copied())
        .env("REFOLD_LOG", "warn")
        .spawn()
        .expect("start refold run");
    // The store exists once the host is past its start.
    let started = std::time::Instant::now();
    while !dir.path().join("s.db").exists() && started.elapsed().as_secs() < 60 {
        assert!(
            host.try_wait().expect("refold run").is_none(),
            "refold run ended at its start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.id()));
    host.kill().expect("stop refold run");
    host.wait().expect("wait for refold run");
    let status = status.expect("the host's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("THP_enabled in /proc status")
        .trim()
        .to_owned()
}

/// The allocator's memory on transparent huge pages stayed resident after a replay
/// (BENCHMARKS.md, "Resident memory after a replay"); `MIMALLOC_ALLOW_THP` still decides.
#[test]
#[cfg(target_os = "linux")]
fn the_host_keeps_its_memory_off_transparent_huge_pages() {
    let own = std::fs::read_to_string("/proc/self/status").expect("/proc status");
    assert!(
        own.contains("THP_enabled:\t1"),
        "this test needs a process allowed huge pages: {own}"
    );
    assert_eq!(huge_pages_of_a_running_host(&[]), "0");
    assert_eq!(
        huge_pages_of_a_running_host(&[("MIMALLOC_ALLOW_THP", "1")]),
        "1"
    );
}
