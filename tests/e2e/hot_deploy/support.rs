//! The hot-deploy tests' host: a watching `refold run` over a sandboxed store, with the test's
//! own handle on the store, and helpers to read the `counter` fixture's read model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use refold::domain::{ExpectedVersion, Generation, GenerationState};
use refold::engine::code_hash;
use refold::store::{Refusal, Store, StreamAppend};
use refold_tests::{
    Running, Sandbox, catch_up, copy_log, dump, dump_uri, fixture, text, thing, wait_progressing,
    wait_until,
};
use serde_json::Value;

/// A watching host over a sandboxed store, with the test's own handle on the store.
pub struct Host {
    pub sandbox: Sandbox,
    pub uri: String,
    pub store: Arc<dyn Store>,
    pub folder: PathBuf,
    pub process: Running,
}

impl Host {
    /// On an embedded store in the sandbox.
    pub async fn start() -> Self {
        let sandbox = Sandbox::new();
        let uri = sandbox.uri("store.db");
        Self::start_on(sandbox, uri).await
    }

    /// On the store `uri` names.
    pub async fn start_on(sandbox: Sandbox, uri: String) -> Self {
        let store = refold::store::open(&uri).await.expect("open store");
        let folder = sandbox.path("projections");
        std::fs::create_dir_all(&folder).expect("projections folder");
        let process = Running::logged(
            &[
                "run",
                "--store",
                &uri,
                "--projections",
                &folder.to_string_lossy(),
            ],
            &[("REFOLD_LOG", "info")],
            &sandbox.path("host.log"),
        );
        Self {
            sandbox,
            uri,
            store,
            folder,
            process,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.sandbox.path("host.log")).unwrap_or_default()
    }

    /// Write a fixture's bytes to a file of the folder, in place.
    pub fn deploy(&self, fixture_name: &str, file: &str) -> String {
        let bytes = std::fs::read(fixture(fixture_name)).expect("fixture");
        let path = self.folder.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("subfolder");
        }
        std::fs::write(&path, &bytes).expect("write component");
        code_hash(&bytes)
    }

    /// Write a fixture's bytes beside the file, then rename it into place.
    pub fn deploy_by_rename(&self, fixture_name: &str, file: &str) -> String {
        let bytes = std::fs::read(fixture(fixture_name)).expect("fixture");
        let temp = self.folder.join(format!(".{file}.tmp"));
        std::fs::write(&temp, &bytes).expect("write temp");
        std::fs::rename(&temp, self.folder.join(file)).expect("rename");
        code_hash(&bytes)
    }

    pub async fn generations(&self) -> Vec<Generation> {
        self.store
            .generations("counter")
            .await
            .expect("generations")
    }

    pub async fn head(&self) -> u64 {
        self.store.head().await.expect("head")
    }

    /// Wait until generation `number` is active, runs `hash`, and has folded in the head.
    pub async fn wait_serving(&mut self, number: u32, hash: &str) {
        let head = self.head().await;
        let what = format!("generation {number} running {hash} at the head ({head})");
        self.wait_generations("counter", &what, |generations| {
            generations.iter().any(|g| {
                g.number == number
                    && g.state == GenerationState::Active
                    && g.code_hash == hash
                    && g.checkpoint == head
            })
        })
        .await;
        assert!(self.process.alive(), "host exited:\n{}", self.log());
    }

    /// Wait until a projection's generations satisfy `done`, for as long as their checkpoints
    /// and states keep moving.
    pub async fn wait_generations(
        &self,
        projection: &str,
        what: &str,
        done: impl Fn(&[Generation]) -> bool,
    ) {
        let (store, done) = (&self.store, &done);
        wait_progressing(what, || async move {
            let generations = store.generations(projection).await.expect("generations");
            if done(&generations) {
                Ok(())
            } else {
                Err(generations
                    .iter()
                    .map(|g| format!("g{} {:?} {}", g.number, g.state, g.checkpoint))
                    .collect::<Vec<_>>())
            }
        })
        .await;
    }

    /// Wait until the recorded refusals satisfy `done`.
    pub async fn wait_refusals(&self, what: &str, done: impl Fn(&[Refusal]) -> bool) {
        let (store, done) = (&self.store, &done);
        wait_until(what, || async move {
            done(&store.refusals().await.expect("refusals"))
        })
        .await;
    }

    pub async fn refusal(&self, component: &str) -> Option<String> {
        self.store
            .refusals()
            .await
            .expect("refusals")
            .into_iter()
            .find(|r| r.component == component)
            .map(|r| r.error)
    }

    pub async fn wait_refused(&self, component: &str, reason: &str) {
        let what = format!("{component} refused for `{reason}`");
        self.wait_refusals(&what, |refusals| {
            refusals
                .iter()
                .any(|r| r.component == component && r.error.contains(reason))
        })
        .await;
    }

    /// What `by_stream` must hold when generation `version` has folded in the whole log.
    pub async fn expected_by_stream(&self, version: i64) -> Vec<(String, (i64, i64))> {
        stream_counts(self.store.as_ref())
            .await
            .into_iter()
            .map(|(id, n)| (id, (n, version)))
            .collect()
    }

    pub fn db(&self) -> PathBuf {
        self.sandbox.path("store.db")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("host log:\n{}", self.log());
        }
    }
}

/// `streams` streams of `per_stream` events each, appended one stream per call.
pub async fn append_streams(store: &dyn Store, prefix: &str, streams: usize, per_stream: usize) {
    let appends: Vec<StreamAppend> = (0..streams)
        .map(|i| StreamAppend {
            aggregate_id: format!("{prefix}-{i}"),
            expected: ExpectedVersion::Any,
            events: (0..per_stream).map(|_| thing("Counted")).collect(),
        })
        .collect();
    for chunk in appends.chunks(100) {
        store.append_all(chunk.to_vec()).await.expect("append");
    }
}

/// `counter__by_stream` through its stable name on any store: stream -> (count, version).
pub async fn by_stream_at(uri: &str) -> Vec<(String, (i64, i64))> {
    counts(dump_uri(uri).await)
}

/// `counter__by_stream` through its stable name: stream -> (count, version).
pub fn by_stream(db: &Path) -> Vec<(String, (i64, i64))> {
    counts(dump(db))
}

fn counts(
    mut models: std::collections::BTreeMap<String, Vec<(String, Value)>>,
) -> Vec<(String, (i64, i64))> {
    models
        .remove("counter__by_stream")
        .unwrap_or_default()
        .into_iter()
        .map(|(id, doc)| {
            let count = doc["count"].as_i64().unwrap_or(-1);
            let version = doc["version"].as_i64().unwrap_or(-1);
            (id, (count, version))
        })
        .collect()
}

/// Every stream of the log with its event count: what `by_stream` must hold.
async fn stream_counts(store: &dyn Store) -> Vec<(String, i64)> {
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    let page = store
        .read_all(0, usize::MAX >> 1, &Default::default())
        .await
        .expect("read log");
    for event in page.events {
        *counts.entry(event.aggregate_id).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// The read models a clean replay of the same log with one component gives.
pub async fn clean_replay(
    from: &dyn Store,
    fixture_name: &str,
) -> Vec<(String, Vec<(String, Value)>)> {
    let sandbox = Sandbox::new();
    copy_log(from, sandbox.store("clean.db").await.as_ref()).await;
    let folder = sandbox.path("clean");
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::copy(fixture(fixture_name), folder.join("counter.wasm")).expect("copy");
    let out = catch_up(&sandbox.uri("clean.db"), &folder, &[]);
    assert!(out.status.success(), "clean replay: {}", text(&out.stderr));
    dump(&sandbox.path("clean.db")).into_iter().collect()
}
