//! Test support for the end-to-end suite: building real guest components, sandboxes with real
//! stores, running the real `refold` binary, and dumping read models straight from the store
//! file (independently of the host's own read code).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use refold::store::{self, Store};

pub mod mongo;
pub mod proxy;
pub mod webdriver;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The cargo profile folder this test binary was built into (`target/release`, `target/debug`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("profile folder")
}

/// Where tests keep what a person may want to look at after a run (screenshots):
/// `target/<profile>/e2e-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let dir = profile_dir().join("e2e-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts folder");
    dir
}

/// The `refold` binary built beside this test (cargo builds it with the workspace's tests).
pub fn refold_bin() -> PathBuf {
    let bin = profile_dir().join("refold");
    assert!(
        bin.is_file(),
        "{} is missing: run the suite with `cargo test --release --workspace` (which builds it)",
        bin.display()
    );
    bin
}

fn build_once(cell: &'static OnceLock<PathBuf>, project: &str, out: &str) -> &'static Path {
    cell.get_or_init(|| {
        let out = profile_dir().join("e2e-components").join(out);
        let built = refold::guest_build::build_rust(&repo_root().join(project), &out)
            .unwrap_or_else(|e| panic!("building {project}: {e}"));
        assert!(!built.is_empty(), "{project} built no component");
        out
    })
}

/// The names of the example projections, as their components are named.
pub const EXAMPLE_NAMES: [&str; 4] = [
    "payments",
    "invoice-billing",
    "invoice-analytics",
    "user-profiles",
];

/// The example projections, built to components (once per test run).
pub fn examples() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "example-projections/rust", "examples")
}

/// The upcasting example (`payment_settled.wasm`, an upcaster, and `settlements.wasm`), built to
/// components (once per test run).
pub fn upcasting() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "example-projections/upcasting", "upcasting")
}

/// The fixture projections (healthy and hostile), built to components (once per test run).
pub fn fixtures() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "tests/fixtures", "fixtures")
}

/// The JavaScript example projections, built to components with componentize-qjs (installed by
/// `scripts/setup`), once per test run.
pub fn js_examples() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| script_components(Script::JavaScript, "js-examples", None))
}

/// The JavaScript fixtures of `tests/fixtures/js` (`hourglass.wasm`), built like the examples.
pub fn js_fixtures() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        script_components(Script::JavaScript, "js-fixtures", Some("tests/fixtures/js"))
    })
}

/// The Python example projections, built to components with componentize-py (installed by
/// `scripts/setup`) by `example-projections/python/build.py`, which keeps a component whose
/// sources did not change.
pub fn python_examples() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| script_components(Script::Python, "python-examples", None))
}

/// The Python fixtures of `tests/fixtures/python` (`dice.wasm`, `sundial.wasm`), built like the
/// examples.
pub fn python_fixtures() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        script_components(
            Script::Python,
            "python-fixtures",
            Some("tests/fixtures/python"),
        )
    })
}

/// The C example projections, built with clang and wasi-libc (installed by `scripts/setup`)
/// through `refold build`'s own code, once per test run.
pub fn c_examples() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        let out = profile_dir().join("e2e-components").join("c-examples");
        for example in EXAMPLE_NAMES {
            let project = repo_root()
                .join("example-projections/c")
                .join(example.replace('_', "-"));
            refold::guest_build::build(&project, &out)
                .unwrap_or_else(|e| panic!("building the C example {example} failed: {e}"));
        }
        out
    })
}

/// A language whose examples folder has a build script of its own.
#[derive(Clone, Copy)]
enum Script {
    JavaScript,
    Python,
}

/// Build the projections of `projects` (the language's examples when `None`) with the
/// language's build script, into `out` under the profile folder.
fn script_components(script: Script, out: &str, projects: Option<&str>) -> PathBuf {
    let (interpreter, file) = match script {
        Script::JavaScript => ("node", "example-projections/js/build.mjs"),
        Script::Python => ("python3", "example-projections/python/build.py"),
    };
    let out = profile_dir().join("e2e-components").join(out);
    let mut build = Command::new(interpreter);
    build.arg(repo_root().join(file)).arg(&out);
    if let Some(projects) = projects {
        build.arg("--projects").arg(repo_root().join(projects));
    }
    let built = build
        .output()
        .unwrap_or_else(|e| panic!("run {interpreter} (scripts/setup installs it): {e}"));
    assert!(
        built.status.success(),
        "{file} failed: {}",
        text(&built.stderr)
    );
    out
}

/// The fixtures built for wasm32-wasip2 (`wasi_files.wasm`, `dialer.wasm`,
/// `clocked_upcaster.wasm`, `abacus.wasm`), whose components import WASI through the standard
/// library (once per test run).
pub fn wasi_fixture() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        let project = repo_root().join("tests/fixtures/wasi");
        let target = profile_dir().join("guests-wasip2");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(project.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the wasm32-wasip2 fixture failed"
        );
        let out = profile_dir().join("e2e-components").join("wasi");
        std::fs::create_dir_all(&out).expect("create the wasi fixture folder");
        for name in ["wasi_files", "dialer", "clocked_upcaster", "abacus"] {
            std::fs::copy(
                target.join(format!("wasm32-wasip2/release/{name}.wasm")),
                out.join(format!("{name}.wasm")),
            )
            .unwrap_or_else(|e| panic!("copy {name}.wasm: {e}"));
        }
        out
    })
}

/// A folder holding copies of the named components (`payments` for `payments.wasm`).
pub fn projections(from: &Path, names: &[&str], dest: &Path) -> PathBuf {
    std::fs::create_dir_all(dest).expect("create projections folder");
    for name in names {
        let file = format!("{}.wasm", name.replace('-', "_"));
        std::fs::copy(from.join(&file), dest.join(&file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    dest.to_path_buf()
}

/// A seed 000 payment event of `organization` (user `user-1`), without id or time.
pub fn payment(
    event_type: &str,
    organization: &str,
    data: serde_json::Value,
) -> refold::domain::NewEvent {
    refold::domain::NewEvent {
        id: None,
        aggregate_type: "Payment".into(),
        event_type: event_type.into(),
        event_data: data,
        metadata: serde_json::json!({ "organizationId": organization, "userId": "user-1" }),
        timestamp_ms: None,
    }
}

/// A minimal event of aggregate type `Thing`, for tests that only count events.
pub fn thing(event_type: &str) -> refold::domain::NewEvent {
    refold::domain::NewEvent {
        id: None,
        aggregate_type: "Thing".into(),
        event_type: event_type.into(),
        event_data: serde_json::json!({}),
        metadata: serde_json::json!({}),
        timestamp_ms: None,
    }
}

/// Append `n` events [`thing`]`(label)`, each to a new stream `{label}-{i}`; the position of the
/// last.
pub async fn append_things(store: &dyn Store, label: &str, n: usize) -> u64 {
    let mut last = 0;
    for i in 0..n {
        last = store
            .append(
                &format!("{label}-{i}"),
                refold::domain::ExpectedVersion::NoStream,
                vec![thing(label)],
            )
            .await
            .expect("append")
            .last_position;
    }
    last
}

/// A temporary folder with a store file in it.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A new empty sandbox.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A path inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The URI of a store file in the sandbox.
    pub fn uri(&self, name: &str) -> String {
        format!("sqlite://{}", self.path(name).display())
    }

    /// Open a store file of the sandbox through the library.
    pub async fn store(&self, name: &str) -> Arc<dyn Store> {
        store::open(&self.uri(name)).await.expect("open store")
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A `refold` command with quiet logs, a code cache of the test run's own (never the user's),
/// and its HTTP API on a free port (tests run hosts side by side; `--http` overrides it).
pub fn refold() -> Command {
    let mut command = Command::new(refold_bin());
    command
        .env("REFOLD_LOG", "warn")
        .env("REFOLD_HTTP", "127.0.0.1:0")
        .env("REFOLD_CODE_CACHE", profile_dir().join("e2e-code-cache"));
    command
}

/// The file of one built fixture component (`counter-v1` for `counter_v1.wasm`).
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(format!("{}.wasm", name.replace('-', "_")))
}

/// Poll `condition` every 20 ms until it holds; panic naming `what` after 300 s. For a state
/// that follows from a step of the test within seconds (a log line, a health check); a wait on
/// work whose length depends on the machine (a replay, a catch-up) uses [`wait_progressing`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How long the progress a [`wait_progressing`] probe reports may stand still before the wait
/// fails: long enough for a slow or busy machine, short enough that a stuck host fails the test.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// The longest any [`wait_progressing`] may take, however its probe's answers move.
pub const CEILING: std::time::Duration = std::time::Duration::from_secs(1800);

/// Poll `probe` every 20 ms until it answers `Ok`. Each `Err` carries the progress seen so far
/// (checkpoints, states); the wait fails, naming `what` and that progress, only once it has
/// stood still for [`STALL`], so a slow machine takes longer but a stuck host still fails.
pub async fn wait_progressing<F, Fut, P>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), P>>,
    P: PartialEq + std::fmt::Debug,
{
    let mut last: Option<P> = None;
    let started = std::time::Instant::now();
    let mut moved = started;
    loop {
        match probe().await {
            Ok(()) => return,
            Err(progress) => {
                if last.as_ref() != Some(&progress) {
                    last = Some(progress);
                    moved = std::time::Instant::now();
                }
                assert!(
                    moved.elapsed() < STALL,
                    "no progress towards {what} for {STALL:?}; stuck at {last:?}"
                );
                // A host that goes round in circles (a restart loop) moves without progressing.
                assert!(
                    started.elapsed() < CEILING,
                    "no {what} after {CEILING:?}; at {last:?}"
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A `refold` process that is killed when this guard is dropped, so a failing test never leaves
/// a host running (and holding the test harness's output pipes).
pub struct Running(pub std::process::Child);

impl Running {
    /// Start `refold` with arguments, output discarded.
    pub fn start(args: &[&str]) -> Self {
        let child = refold()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start refold");
        Self(child)
    }

    /// Start `refold` with arguments and extra environment, its log (stderr) written to `log`.
    pub fn logged(args: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create log file");
        let child = refold()
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start refold");
        Self(child)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// SIGTERM the process (it stops at a batch boundary) and wait for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.0.id()).expect("a process id");
        // SAFETY: kill(2) on the pid of a child this guard owns and has not reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        self.0.wait().expect("wait for refold")
    }

    /// SIGKILL the process and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `refold` with arguments and return its output.
pub fn run(args: &[&str]) -> Output {
    refold().args(args).output().expect("run refold")
}

/// `refold run --exit-when-caught-up` on a store and a projections folder, with extra
/// arguments (limits); returns its output.
pub fn catch_up(uri: &str, projections: &Path, extra: &[&str]) -> Output {
    let dir = projections.to_string_lossy();
    let mut args = vec![
        "run",
        "--store",
        uri,
        "--projections",
        &dir,
        "--exit-when-caught-up",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// Text of an output stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every read model of a store file: stable name -> sorted `(id, document)`, read with plain
/// SQLite from the views the host maintains.
pub fn dump(db: &Path) -> BTreeMap<String, Vec<(String, serde_json::Value)>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    let views: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("list views");
    views
        .into_iter()
        .map(|view| {
            let rows: Vec<(String, serde_json::Value)> = conn
                .prepare(&format!("SELECT id, body FROM \"{view}\" ORDER BY id"))
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        let body: String = r.get(1)?;
                        Ok((
                            r.get(0)?,
                            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                        ))
                    })?
                    .collect()
                })
                .expect("read view");
            (view, rows)
        })
        .collect()
}

/// Read models of any store URI: raw SQLite for `sqlite://`, the plain driver for MongoDB, with
/// dates in one canonical form so both stores compare equal.
pub async fn dump_uri(uri: &str) -> BTreeMap<String, Vec<(String, serde_json::Value)>> {
    let models = match uri.strip_prefix("sqlite://") {
        Some(path) => dump(Path::new(path)),
        None => mongo::dump(uri).await,
    };
    models
        .into_iter()
        .map(|(view, docs)| {
            (
                view,
                docs.into_iter()
                    .map(|(id, doc)| (id, canonical_dates(doc)))
                    .collect(),
            )
        })
        .collect()
}

/// Rewrite every `{"$date": ...}` as milliseconds-precision RFC 3339 text.
pub fn canonical_dates(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let (1, Some(Value::String(text))) = (map.len(), map.get("$date"))
                && let Ok(date) = mongodb::bson::DateTime::parse_rfc3339_str(text)
            {
                let canonical = refold::domain::time::iso8601_millis(date.timestamp_millis());
                return serde_json::json!({ "$date": canonical });
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, canonical_dates(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_dates).collect()),
        other => other,
    }
}

/// Copy every event of one store into another through the store API, keeping ids, timestamps,
/// order, and so positions and stream versions: a clean replay of exactly the same log.
pub async fn copy_log(from: &dyn Store, to: &dyn Store) {
    use refold::domain::{EventFilter, ExpectedVersion, NewEvent};
    use refold::store::StreamAppend;
    let mut after = 0;
    loop {
        let page = from
            .read_all(after, 2_000, &EventFilter::default())
            .await
            .expect("read log");
        if page.events.is_empty() {
            return;
        }
        after = page.scanned_to;
        let mut appends: Vec<StreamAppend> = Vec::new();
        for event in page.events {
            let new = NewEvent {
                id: Some(event.id),
                aggregate_type: event.aggregate_type,
                event_type: event.event_type,
                event_data: serde_json::from_str(&event.data).expect("data"),
                metadata: serde_json::from_str(&event.metadata).expect("metadata"),
                timestamp_ms: Some(event.timestamp_ms),
            };
            match appends.last_mut() {
                Some(last) if last.aggregate_id == event.aggregate_id => last.events.push(new),
                _ => appends.push(StreamAppend {
                    aggregate_id: event.aggregate_id,
                    expected: ExpectedVersion::Any,
                    events: vec![new],
                }),
            }
        }
        to.append_all(appends).await.expect("copy events");
    }
}
