//! `refold test`: given-when-then fixtures for a projection, run through the real engine and a
//! real embedded store made for each case, in any language the projection is written in.
//!
//! A fixture file is JSON: `{"cases": [...]}`. A case gives events (`given`, in the append
//! shape), and expects documents (`then`, per collection) or a failure (`fails`). The events are
//! stored the way `refold import` stores them, with fixed times unless the case gives its own,
//! so a case runs the same on every machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::import::{StreamOrder, event_of};
use super::run::HostArgs;
use crate::deploy::{Deployer, Outcome};
use crate::domain::{FailurePolicy, GenerationState, OnFailure};
use crate::engine::Engine;
use crate::guest_build;
use crate::projector::{DropReason, HandleFailure, ProjectorState, ProjectorStatus};
use crate::store::{self, ImportBatch};

/// Arguments of `refold test` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct TestArgs {
    /// A projection folder (built as `refold build` builds it) or a built component (`.wasm`).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Fixture files, or folders of them (`*.json`); default: the folder `fixtures` of the
    /// projection folder.
    fixtures: Vec<PathBuf>,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// How long one case may run, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[command(flatten)]
    host: HostArgs,
}

/// A fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    cases: Vec<Case>,
}

/// One case: events in, documents or a failure out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The events, in order: the append shape with `aggregateId`, and optionally `id`,
    /// `version`, `timestamp` or `timestampMs`, and `position` (which must be its place).
    #[serde(default)]
    given: Vec<Value>,
    /// Documents expected, per collection (`COLLECTION`, or `PROJECTION/COLLECTION` when the
    /// folder has several projections), each with its `_id` and the fields to compare.
    #[serde(default)]
    then: BTreeMap<String, Vec<Map<String, Value>>>,
    /// Whether the collections of `then` hold exactly its documents, each with exactly its
    /// fields.
    #[serde(default)]
    exactly: bool,
    /// The failure expected.
    #[serde(default)]
    fails: Option<Fails>,
}

/// The failure a case expects.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fails {
    /// The event that fails: its place in `given`, from 1.
    event: u64,
    /// Its kind: `invalid-event`, `invalid-state`, `host` or `other` when the projection
    /// reports it; `contract`, `trap`, `deadline`, `memory`, `refused` or `host-failure` when
    /// the host finds it.
    #[serde(default)]
    kind: Option<String>,
    /// Text the error's message contains.
    #[serde(default)]
    message: Option<String>,
}

/// The kinds a failure can have: the projection's own (its WIT `error-kind`), then the host's
/// findings.
const KINDS: [&str; 10] = [
    "invalid-event",
    "invalid-state",
    "host",
    "other",
    "contract",
    "trap",
    "deadline",
    "memory",
    "refused",
    "host-failure",
];

/// The time of a fixture's first event when it gives none (2024-01-01T00:00:00Z); each next one
/// is a second later.
const FIRST_TIME_MS: i64 = 1_704_067_200_000;

/// Most documents of one collection a case compares.
const MAX_DOCUMENTS: usize = 10_000;

pub(super) async fn test(mut args: TestArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let fixtures = fixture_files(&args)?;
    let work = tempdir()?;
    let components = components(&args.path, work.path()).await?;
    // A projection's code is deterministic: an event that fails once fails again, so a case
    // stops at its first failure.
    if !args.host.on_failure.is_empty() {
        eprintln!(
            "note: --on-failure (REFOLD_ON_FAILURE) does not apply to refold test: each case stops \
             at its first failing event"
        );
    }
    args.host.on_failure = vec![(
        "*".into(),
        FailurePolicy {
            attempts: 1,
            on_failure: OnFailure::Stop,
        },
    )];
    let engine = args.host.engine()?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &fixtures {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let fixture: Fixture = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a fixture file", file.display()))?;
        for (number, case) in fixture.cases.iter().enumerate() {
            if args
                .only
                .as_deref()
                .is_some_and(|only| !case.name.contains(only))
            {
                continue;
            }
            let store_dir = work.path().join(format!("case-{passed}-{failed}"));
            let outcome = run_case(
                case,
                &engine,
                &components,
                &store_dir,
                Duration::from_secs(args.timeout),
                &args.host,
            )
            .await
            .with_context(|| format!("{}: case {} ({})", file.display(), number + 1, case.name));
            let _ = std::fs::remove_dir_all(&store_dir);
            match outcome {
                Ok(problems) if problems.is_empty() => {
                    passed += 1;
                    println!("ok    {}", case.name);
                }
                Ok(problems) => {
                    failed += 1;
                    println!("FAIL  {}  ({})", case.name, file.display());
                    for problem in problems {
                        println!("      {problem}");
                    }
                }
                Err(error) => {
                    failed += 1;
                    println!("FAIL  {}  ({})", case.name, file.display());
                    println!("      {error:#}");
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if passed + failed == 0 {
        anyhow::bail!(
            "no case to run in {}",
            fixtures
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "\n{} cases: {passed} passed, {failed} failed ({seconds:.2} s)",
        passed + failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A folder of one's own under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!(
        "refold-test-{}-{}",
        std::process::id(),
        crate::domain::time::now_millis()
    ));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    Ok(TempDir(dir))
}

/// The fixture files named, or the projection folder's `fixtures`.
fn fixture_files(args: &TestArgs) -> anyhow::Result<Vec<PathBuf>> {
    let named = if args.fixtures.is_empty() {
        anyhow::ensure!(
            args.path.is_dir(),
            "name the fixture files after the component: refold test {} FIXTURE.json",
            args.path.display()
        );
        vec![args.path.join("fixtures")]
    } else {
        args.fixtures.clone()
    };
    let mut files = Vec::new();
    for path in named {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| format!("cannot read the folder {}", path.display()))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            anyhow::ensure!(
                !found.is_empty(),
                "{} holds no fixture file (*.json)",
                path.display()
            );
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path);
        } else {
            anyhow::bail!("no fixture file or folder at {}", path.display());
        }
    }
    Ok(files)
}

/// A folder holding the components to test: the one given, or the projection folder built.
async fn components(path: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let out = work.join("components");
    std::fs::create_dir_all(&out)?;
    if path.is_file() {
        let name = path.file_name().context("a component file has a name")?;
        std::fs::copy(path, out.join(name))
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(out);
    }
    anyhow::ensure!(
        path.is_dir(),
        "no projection folder or component at {}",
        path.display()
    );
    let (project, into) = (path.to_path_buf(), out.clone());
    let built = tokio::task::spawn_blocking(move || guest_build::build(&project, &into))
        .await?
        .with_context(|| format!("building {}", path.display()))?;
    anyhow::ensure!(!built.is_empty(), "{} built no component", path.display());
    Ok(out)
}

/// The case's events, checked and numbered as an import numbers them.
fn events_of(case: &Case) -> anyhow::Result<ImportBatch> {
    let mut order = StreamOrder::default();
    let mut events = Vec::new();
    for (i, given) in case.given.iter().enumerate() {
        let place = i as u64 + 1;
        let origin = format!("event {place}");
        let Value::Object(fields) = given else {
            anyhow::bail!("{origin}: an event is a JSON object");
        };
        let mut fields = fields.clone();
        if let Some(position) = fields.remove("position") {
            anyhow::ensure!(
                position.as_u64() == Some(place),
                "{origin}: `position` is {position}, but the log numbers its events in order \
                 from 1: this event's position is {place}"
            );
        }
        if !fields.contains_key("timestamp") && !fields.contains_key("timestampMs") {
            fields.insert(
                "timestampMs".into(),
                Value::from(FIRST_TIME_MS + i as i64 * 1000),
            );
        }
        order.push(event_of(Value::Object(fields), origin)?, &mut events)?;
        // Positions are the places in `given` only if no event waits for an earlier version.
        anyhow::ensure!(
            events.len() as u64 == place,
            "event {place}: it comes before an earlier version of its stream; give a stream's \
             events in version order"
        );
    }
    order.finish()?;
    Ok(ImportBatch::new(events)?.last())
}

/// Run one case; the differences from what it expects (none when it passes).
async fn run_case(
    case: &Case,
    engine: &Arc<Engine>,
    components: &Path,
    dir: &Path,
    timeout: Duration,
    host: &HostArgs,
) -> anyhow::Result<Vec<String>> {
    let batch = events_of(case)?;
    if let Some(fails) = &case.fails {
        anyhow::ensure!(
            (1..=case.given.len() as u64).contains(&fails.event),
            "`fails.event` is {}, but the case gives {} events",
            fails.event,
            case.given.len()
        );
        if let Some(kind) = &fails.kind {
            anyhow::ensure!(
                KINDS.contains(&kind.as_str()),
                "`fails.kind` `{kind}` is not a kind of failure: one of {}",
                KINDS.join(", ")
            );
        }
    }
    for (key, documents) in &case.then {
        if let Some(document) = documents.iter().find(|d| !d.contains_key("_id")) {
            anyhow::bail!(
                "a document expected in `{key}` has no `_id`: {}",
                Value::Object(document.clone())
            );
        }
    }
    std::fs::create_dir_all(dir)?;
    let store = store::open(&format!("sqlite://{}", dir.join("case.db").display())).await?;
    if !batch.is_empty() {
        store.import(batch).await?;
    }
    let head = store.head().await?;

    let mut deployer = Deployer::new(Arc::clone(engine), Arc::clone(&store), components);
    deployer
        .supervisor
        .set_failure_policies(host.on_failure.iter().cloned().collect());
    for (path, outcome) in deployer.scan().await? {
        if let Outcome::Refused { error } = outcome {
            anyhow::bail!("{} was refused: {error}", path.display());
        }
    }
    let projections: Vec<String> = deployer.supervisor.deployed().map(str::to_owned).collect();
    anyhow::ensure!(
        !projections.is_empty(),
        "no projection was deployed from {}",
        components.display()
    );
    // Until every projector has folded the last event in and serves its generation, or stopped.
    let done = |s: &ProjectorStatus| {
        s.state == ProjectorState::Stopped
            || (s.state == ProjectorState::Live
                && s.checkpoint >= head
                && s.generation_state == GenerationState::Active)
    };
    let waits = deployer
        .supervisor
        .status_receivers()
        .into_iter()
        .map(|mut status| async move {
            let _ = status.wait_for(done).await;
        });
    let finished = tokio::time::timeout(timeout, futures_util::future::join_all(waits))
        .await
        .is_ok();
    let reasons = deployer.supervisor.shutdown().await;
    anyhow::ensure!(
        finished,
        "the projection did not fold the case's {head} events in within {} s (--timeout)",
        timeout.as_secs()
    );
    let mut failures = Vec::new();
    let mut problems = Vec::new();
    for (projection, reason) in reasons {
        match reason {
            DropReason::Failed {
                position, failure, ..
            } => failures.push((projection, position, failure)),
            DropReason::Shutdown | DropReason::Superseded(_) => {}
            other => problems.push(format!("{projection} stopped: {other}")),
        }
    }
    // The failure the case expects is one of them (at its event if there is one there); any
    // other is a problem of its own.
    let expected = case.fails.as_ref().and_then(|fails| {
        let at = failures.iter().position(|(_, p, _)| *p == fails.event);
        at.or((!failures.is_empty()).then_some(0))
    });
    let expected = expected.map(|i| failures.remove(i));
    problems.extend(check_failure(case, expected.as_ref()));
    problems.extend(failures.iter().map(|(projection, position, failure)| {
        format!("{projection} failed at event {position}: {failure}")
    }));
    for (key, expected) in &case.then {
        let (projection, collection) = match key.split_once('/') {
            Some((projection, collection)) => (projection.to_owned(), collection),
            None if projections.len() == 1 => (projections[0].clone(), key.as_str()),
            None => anyhow::bail!(
                "`then` names `{key}`, but there are several projections ({}): name it \
                 PROJECTION/COLLECTION",
                projections.join(", ")
            ),
        };
        // The generation the case built: served once it caught up; when the projection stopped
        // before that, its documents are read one by one (they cannot be listed).
        let generation = store
            .generations(&projection)
            .await?
            .pop()
            .with_context(|| format!("`then` names `{key}`, but {projection} has no generation"))?;
        anyhow::ensure!(
            generation.collections.iter().any(|c| c == collection),
            "`then` names `{key}`, but {projection} declares no collection `{collection}` (it \
             declares {})",
            generation.collections.join(", ")
        );
        let actual = if generation.state == GenerationState::Active {
            store
                .list_documents(&projection, collection, MAX_DOCUMENTS)
                .await?
        } else {
            if case.exactly {
                problems.push(format!(
                    "{key}: `exactly` cannot be checked: {projection} stopped before its first \
                     catch-up, so its documents cannot be listed (the documents named are \
                     compared)"
                ));
            }
            let mut reader = store.reader(&generation)?;
            expected
                .iter()
                .filter_map(|d| d.get("_id").and_then(Value::as_str))
                .map(|id| reader.get(collection, id))
                .filter_map(Result::transpose)
                .map(|found| found.map(Value::Object))
                .collect::<Result<Vec<_>, _>>()?
        };
        if case.exactly && actual.len() >= MAX_DOCUMENTS {
            problems.push(format!(
                "{key}: holds {MAX_DOCUMENTS} documents or more; `exactly` compares the first \
                 {MAX_DOCUMENTS} only"
            ));
        }
        let expected: Vec<Value> = expected.iter().cloned().map(Value::Object).collect();
        problems.extend(compare(
            key,
            &expected,
            &actual,
            case.exactly && generation.state == GenerationState::Active,
        )?);
    }
    Ok(problems)
}

/// The failure's kind, as a fixture names it.
fn kind_of(failure: &HandleFailure) -> &str {
    match failure {
        HandleFailure::Guest { kind, .. } => kind,
        HandleFailure::Contract { .. } => "contract",
        HandleFailure::Trap(_) => "trap",
        HandleFailure::Deadline(_) => "deadline",
        HandleFailure::Memory(_) => "memory",
        HandleFailure::Refused(_) => "refused",
        HandleFailure::Host(_) => "host-failure",
    }
}

fn check_failure(case: &Case, failure: Option<&(String, u64, HandleFailure)>) -> Vec<String> {
    match (&case.fails, failure) {
        (None, None) => Vec::new(),
        (None, Some((projection, position, failure))) => vec![format!(
            "{projection} failed at event {position}: {failure}"
        )],
        (Some(expected), None) => vec![format!(
            "expected event {} to fail{}, but every event was handled",
            expected.event,
            expected
                .kind
                .as_deref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default()
        )],
        (Some(expected), Some((_, position, failure))) => {
            let mut problems = Vec::new();
            if *position != expected.event {
                problems.push(format!(
                    "expected event {} to fail, but event {position} failed: {failure}",
                    expected.event
                ));
            }
            if let Some(kind) = &expected.kind
                && kind.as_str() != kind_of(failure)
            {
                problems.push(format!(
                    "expected a failure of kind {kind}, got {}: {failure}",
                    kind_of(failure)
                ));
            }
            if let Some(message) = &expected.message
                && !failure.to_string().contains(message.as_str())
            {
                problems.push(format!(
                    "expected the failure to say `{message}`, it says: {failure}"
                ));
            }
            problems
        }
    }
}

/// The differences between the documents a collection holds and those expected.
fn compare(
    collection: &str,
    expected: &[Value],
    actual: &[Value],
    exactly: bool,
) -> anyhow::Result<Vec<String>> {
    let id_of = |document: &Value| {
        document
            .get("_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut problems = Vec::new();
    let mut named = Vec::new();
    for document in expected {
        let Some(id) = id_of(document) else {
            anyhow::bail!("a document expected in `{collection}` has no `_id`: {document}");
        };
        named.push(id.clone());
        let Some(found) = actual
            .iter()
            .find(|d| id_of(d).as_deref() == Some(id.as_str()))
        else {
            let held: Vec<String> = actual.iter().filter_map(id_of).take(10).collect();
            problems.push(format!(
                "{collection}/{id}: missing (the collection holds {})",
                if held.is_empty() {
                    "no document".to_owned()
                } else {
                    held.join(", ")
                }
            ));
            continue;
        };
        diff(
            &format!("{collection}/{id}"),
            document,
            found,
            exactly,
            &mut problems,
        );
    }
    if exactly {
        for document in actual {
            if let Some(id) = id_of(document)
                && !named.contains(&id)
            {
                problems.push(format!("{collection}/{id}: not expected: {document}"));
            }
        }
    }
    Ok(problems)
}

/// The fields of `expected` that `actual` does not have as expected (every field of `actual`,
/// `exactly`), as `path: expected X, got Y` lines. Numbers compare by value (`2` is `2.0`).
fn diff(path: &str, expected: &Value, actual: &Value, exactly: bool, problems: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (field, value) in expected {
                let at = format!("{path}.{field}");
                match actual.get(field) {
                    Some(found) => diff(&at, value, found, exactly, problems),
                    None => problems.push(format!("{at}: expected {value}, the field is missing")),
                }
            }
            if exactly {
                for (field, value) in actual {
                    if !expected.contains_key(field) {
                        problems.push(format!("{path}.{field}: not expected, is {value}"));
                    }
                }
            }
        }
        _ if same(expected, actual) => {}
        _ => problems.push(format!("{path}: expected {expected}, got {actual}")),
    }
}

/// JSON equality with numbers compared by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_differ_by_field_with_numbers_compared_by_value() {
        let expected = [json!({ "_id": "a", "count": 2, "amount": 6.5, "nested": { "x": 1.0 } })];
        let actual = [
            json!({ "_id": "a", "count": 2.0, "amount": 6.5, "nested": { "x": 1, "y": 2 }, "extra": true }),
            json!({ "_id": "b" }),
        ];
        assert!(
            compare("c", &expected, &actual, false)
                .expect("compared")
                .is_empty()
        );
        let exact = compare("c", &expected, &actual, true).expect("compared");
        assert_eq!(
            exact,
            [
                "c/a.nested.y: not expected, is 2",
                "c/a.extra: not expected, is true",
                "c/b: not expected: {\"_id\":\"b\"}",
            ]
        );
        let wrong = compare(
            "c",
            &[json!({ "_id": "a", "count": 3 }), json!({ "_id": "z" })],
            &actual,
            false,
        )
        .expect("compared");
        assert_eq!(
            wrong,
            [
                "c/a.count: expected 3, got 2.0",
                "c/z: missing (the collection holds a, b)"
            ]
        );
    }
}
