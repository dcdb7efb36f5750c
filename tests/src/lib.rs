//! Test support for the end-to-end suite: building real guest components, sandboxes with real
//! stores, running the real `refold` binary, and dumping read models straight from the store
//! file (independently of the host's own read code).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use refold::store::{self, Store};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The cargo profile folder this test binary was built into (`target/release`, `target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash>
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).expect("profile folder")
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

/// The example projections, built to components (once per test run).
pub fn examples() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "example-projections/rust", "examples")
}

/// The fixture projections (healthy and hostile), built to components (once per test run).
pub fn fixtures() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "tests/fixtures", "fixtures")
}

/// A folder holding copies of the named components (`payments` for `payments.wasm`).
pub fn projections(from: &Path, names: &[&str], dest: &Path) -> PathBuf {
    std::fs::create_dir_all(dest).expect("create projections folder");
    for name in names {
        let file = format!("{}.wasm", name.replace('-', "_"));
        std::fs::copy(from.join(&file), dest.join(&file)).unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    dest.to_path_buf()
}

/// A temporary folder with a store file in it.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A new empty sandbox.
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
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

/// A `refold` command with quiet logs.
pub fn refold() -> Command {
    let mut command = Command::new(refold_bin());
    command.env("REFOLD_LOG", "warn");
    command
}

/// Run `refold` with arguments and return its output.
pub fn run(args: &[&str]) -> Output {
    refold().args(args).output().expect("run refold")
}

/// Text of an output stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every read model of a store file: stable name -> sorted `(id, document)`, read with plain
/// SQLite from the views the host maintains.
pub fn dump(db: &Path) -> BTreeMap<String, Vec<(String, serde_json::Value)>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open db");
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
                        Ok((r.get(0)?, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)))
                    })?
                    .collect()
                })
                .expect("read view");
            (view, rows)
        })
        .collect()
}

/// Copy the events of one store file into a new store of the sandbox, for a clean replay of
/// exactly the same log.
pub async fn copy_events(from: &Path, sandbox: &Sandbox, to: &str) {
    // The host creates the schema; plain SQLite copies the rows.
    drop(sandbox.store(to).await);
    let conn = rusqlite::Connection::open(sandbox.path(to)).expect("open target");
    conn.execute_batch(&format!(
        "ATTACH DATABASE '{}' AS source; INSERT INTO events SELECT * FROM source.events; DETACH DATABASE source;",
        from.display()
    ))
    .expect("copy events");
}
