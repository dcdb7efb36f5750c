//! The projector loop with a scripted [`Handler`] over a real temporary embedded store: retry,
//! skip to dead letters, stop, careful one-event-at-a-time mode, re-drive, and a checkpoint
//! moved by another writer. Each event the handler accepts appends its position to the
//! document of its stream, so a document shows exactly which events took effect, and how often.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    BatchContext, DropReason, HandleFailure, Handler, Projector, ProjectorPorts, ProjectorStatus,
};
use crate::domain::{
    ExpectedVersion, FailurePolicy, Generation, IndexSpec, Manifest, NewEvent, OnFailure, Position,
    RecordedEvent,
};
use crate::store::sqlite::SqliteStore;
use crate::store::{BatchWrites, Store};

/// Bound on waiting for a projector: only reached when it stops making progress.
const STALL: Duration = Duration::from_secs(60);

/// A handler that fails at chosen positions a chosen number of times, and otherwise records
/// each event's position in its stream's document.
struct Scripted {
    manifest: Manifest,
    /// Position -> (failures left, the failure to report).
    failures: Mutex<HashMap<Position, (u32, HandleFailure)>>,
    /// Each call: the first position and the number of events.
    calls: Mutex<Vec<(Position, usize)>>,
    /// Another writer that, at the last scripted failure, moves the generation's checkpoint
    /// past the failing event: the window between a failure and its commit, made certain.
    interloper: Mutex<Option<(Arc<dyn Store>, Generation)>>,
    /// Positions whose event also puts a document `{"key": "one"}` into `claims`, where `key`
    /// is unique: the second such event's writes are refused by the store.
    claims: Vec<Position>,
}

/// The scripted projection: `seen`, and `claims` with a unique index on `key`.
fn scripted_manifest() -> Manifest {
    let mut manifest = Manifest::new("scripted", 1, ["seen", "claims"]);
    manifest.collections[1]
        .indexes
        .push(IndexSpec::unique("claim_key", &["key"]));
    manifest
}

impl Scripted {
    fn new() -> Self {
        Self {
            manifest: scripted_manifest(),
            failures: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            interloper: Mutex::new(None),
            claims: Vec::new(),
        }
    }

    /// At most `size` events per call.
    fn batches_of(mut self, size: u32) -> Self {
        self.manifest.batch_size = Some(size);
        self
    }

    /// The events at `positions` claim the same unique value.
    fn claiming(mut self, positions: &[Position]) -> Self {
        self.claims = positions.to_vec();
        self
    }

    /// At the last scripted failure, another writer moves the checkpoint past the event.
    fn with_interloper(self, store: &Arc<dyn Store>, generation: &Generation) -> Self {
        if let Ok(mut interloper) = self.interloper.lock() {
            *interloper = Some((Arc::clone(store), generation.clone()));
        }
        self
    }

    /// Fail at `position`, `times` times, as the guest reporting an error.
    fn failing(self, position: Position, times: u32) -> Self {
        let failure = HandleFailure::Guest {
            position: Some(position),
            kind: "invalid-event".into(),
            message: format!("scripted failure at {position}"),
        };
        self.failing_with(position, times, failure)
    }

    fn failing_with(self, position: Position, times: u32, failure: HandleFailure) -> Self {
        if let Ok(mut failures) = self.failures.lock() {
            failures.insert(position, (times, failure));
        }
        self
    }

    fn calls(&self) -> Vec<(Position, usize)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Handler for Scripted {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn code_hash(&self) -> &str {
        "scripted"
    }

    fn handle(
        &self,
        events: &[RecordedEvent],
        mut context: BatchContext,
    ) -> (BatchContext, Result<(), HandleFailure>) {
        if let (Ok(mut calls), Some(first)) = (self.calls.lock(), events.first()) {
            calls.push((first.position, events.len()));
        }
        for event in events {
            let scripted = self.failures.lock().ok().and_then(|mut failures| {
                let (left, failure) = failures.get_mut(&event.position)?;
                (*left > 0).then(|| {
                    *left -= 1;
                    (failure.clone(), *left == 0)
                })
            });
            if let Some((failure, last)) = scripted {
                let interloper = match last {
                    true => self.interloper.lock().ok().and_then(|mut i| i.take()),
                    false => None,
                };
                if let Some((store, generation)) = interloper {
                    let position = event.position;
                    // On a thread and runtime of its own: another writer, unrelated to this one.
                    let moved = std::thread::spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        runtime.block_on(async {
                            let stored = store.generations("scripted").await?[0].checkpoint;
                            store
                                .commit(&generation, BatchWrites::default(), stored, position)
                                .await
                        })
                    })
                    .join()
                    .expect("the other writer's thread");
                    moved.expect("the other writer's commit");
                }
                return (context, Err(failure));
            }
            context.set_position(event.position);
            let update = json!({ "$push": { "positions": event.position } }).to_string();
            if let Err(failure) = context.update("seen", &event.aggregate_id, &update, true) {
                return (context, Err(HandleFailure::Host(failure.to_string())));
            }
            if self.claims.contains(&event.position) {
                let id = event.position.to_string();
                if let Err(failure) = context.put("claims", &id, r#"{"key": "one"}"#) {
                    return (context, Err(HandleFailure::Host(failure.to_string())));
                }
            }
        }
        (context, Ok(()))
    }
}

/// A store in a temporary folder with `events` events in stream `s`, and a building generation
/// of the scripted projection.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    generation: Generation,
}

async fn fixture(events: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("refold.db"))
            .await
            .expect("open store"),
    );
    let events = (0..events)
        .map(|i| NewEvent {
            id: None,
            aggregate_type: "Thing".into(),
            event_type: "ThingHappened".into(),
            event_data: json!({ "i": i }),
            metadata: json!({}),
            timestamp_ms: None,
        })
        .collect();
    store
        .append("s", ExpectedVersion::Any, events)
        .await
        .expect("append");
    let generation = store
        .create_generation(&scripted_manifest(), "scripted", &[], None)
        .await
        .expect("create generation");
    Fixture {
        _dir: dir,
        store,
        generation,
    }
}

/// A running projector: its status, the switch that stops it, and its end.
struct Running {
    status: watch::Receiver<ProjectorStatus>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<DropReason>,
}

fn start(fixture: &Fixture, handler: &Arc<Scripted>, policy: FailurePolicy) -> Running {
    let (stop, stopped) = watch::channel(false);
    let (projector, status) = Projector::new(
        ProjectorPorts::of(&fixture.store),
        Arc::clone(handler) as Arc<dyn Handler>,
        fixture.generation.clone(),
        stopped,
    );
    let done = tokio::spawn(projector.with_failure_policy(policy).run());
    Running { status, stop, done }
}

impl Running {
    /// Wait until the checkpoint reaches `position`.
    async fn reaches(&mut self, position: Position) {
        tokio::time::timeout(STALL, self.status.wait_for(|s| s.checkpoint >= position))
            .await
            .expect("the projector stalled")
            .expect("the projector is gone");
    }

    async fn stop(self) -> DropReason {
        let _ = self.stop.send(true);
        self.done.await.expect("projector task")
    }

    async fn end(self) -> DropReason {
        tokio::time::timeout(STALL, self.done)
            .await
            .expect("the projector did not stop")
            .expect("projector task")
    }
}

/// The positions that took effect in stream `s`'s document, as committed.
async fn seen(store: &Arc<dyn Store>, generation: &Generation) -> Vec<Position> {
    let mut reader = store.reader(generation).expect("reader");
    let document = tokio::task::spawn_blocking(move || reader.get("seen", "s"))
        .await
        .expect("read task")
        .expect("read");
    match document.and_then(|d| d.get("positions").cloned()) {
        Some(Value::Array(positions)) => positions.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    }
}

/// How many dead letters the store holds.
async fn dead_letters(fixture: &Fixture) -> usize {
    fixture.store.dead_letters(None).await.expect("read").len()
}

fn policy(attempts: u32, on_failure: OnFailure) -> FailurePolicy {
    FailurePolicy {
        attempts,
        on_failure,
    }
}

#[tokio::test]
async fn a_failed_batch_is_replayed_one_event_at_a_time_and_the_failing_event_skipped() {
    let fixture = fixture(5).await;
    let handler = Arc::new(Scripted::new().failing(3, u32::MAX));
    let mut running = start(&fixture, &handler, policy(2, OnFailure::Skip));
    running.reaches(5).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    assert_eq!(
        seen(&fixture.store, &fixture.generation).await,
        [1, 2, 4, 5]
    );
    // The whole batch, then one event at a time through its end: 3 twice (its two attempts).
    assert_eq!(
        handler.calls(),
        [(1, 5), (1, 1), (2, 1), (3, 1), (3, 1), (4, 1), (5, 1)]
    );
    let letters = fixture
        .store
        .dead_letters(None)
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].position, letters[0].attempts), (3, 2));
    assert!(
        letters[0].error.contains("scripted failure at 3"),
        "{letters:?}"
    );
}

/// Writes the store refuses as they are (a second document claiming a unique value) are the
/// projection's failure: the batch is gone through one event at a time, and the policy applies
/// to the event whose writes are refused. (Before, the commit was retried forever.)
#[tokio::test]
async fn writes_the_store_refuses_are_the_projections_failure() {
    let skipped = fixture(5).await;
    let handler = Arc::new(Scripted::new().claiming(&[2, 4]));
    let mut running = start(&skipped, &handler, policy(1, OnFailure::Skip));
    running.reaches(5).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    assert_eq!(
        seen(&skipped.store, &skipped.generation).await,
        [1, 2, 3, 5]
    );
    let letters = skipped.store.dead_letters(None).await.expect("read");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].position, 4);
    assert!(
        letters[0].error.contains("refused") && letters[0].error.contains("claim_key"),
        "{}",
        letters[0].error
    );

    // Under `stop`, the projection parks on that event with the reason recorded.
    let parked = fixture(5).await;
    let handler = Arc::new(Scripted::new().claiming(&[2, 4]));
    let reason = start(&parked, &handler, policy(1, OnFailure::Stop))
        .end()
        .await;
    assert!(
        matches!(reason, DropReason::Failed { position: 4, .. }),
        "{reason:?}"
    );
    let stored = parked.store.generations("scripted").await.expect("read");
    assert_eq!(stored[0].checkpoint, 3);
    let error = stored[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("claim_key"), "{error}");
}

#[tokio::test]
async fn stop_parks_the_projection_on_the_failing_event_and_keeps_the_events_before_it() {
    let fixture = fixture(4).await;
    let handler = Arc::new(Scripted::new().failing(2, u32::MAX));
    let running = start(&fixture, &handler, policy(1, OnFailure::Stop));
    let reason = running.end().await;
    assert!(
        matches!(reason, DropReason::Failed { position: 2, .. }),
        "{reason:?}"
    );
    assert_eq!(seen(&fixture.store, &fixture.generation).await, [1]);
    let stored = fixture.store.generations("scripted").await.expect("read");
    assert_eq!(stored[0].checkpoint, 1);
    let error = stored[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("position 2"), "{error}");
    assert_eq!(dead_letters(&fixture).await, 0);
}

#[tokio::test]
async fn an_event_that_fails_fewer_times_than_its_attempts_is_applied_once() {
    let fixture = fixture(3).await;
    let handler = Arc::new(Scripted::new().failing(2, 2));
    let mut running = start(&fixture, &handler, policy(3, OnFailure::Stop));
    running.reaches(3).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    assert_eq!(seen(&fixture.store, &fixture.generation).await, [1, 2, 3]);
    assert_eq!(dead_letters(&fixture).await, 0);
}

#[tokio::test]
async fn host_failures_are_retried_beyond_the_policys_attempts_and_never_skipped() {
    let fixture = fixture(3).await;
    let outage = HandleFailure::Host("store unreachable".into());
    let handler = Arc::new(Scripted::new().failing_with(2, 4, outage));
    let mut running = start(&fixture, &handler, policy(1, OnFailure::Skip));
    running.reaches(3).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    assert_eq!(seen(&fixture.store, &fixture.generation).await, [1, 2, 3]);
    assert_eq!(dead_letters(&fixture).await, 0);
    // The batch is retried whole: a host failure says nothing about one event.
    assert!(
        handler.calls().iter().all(|(_, n)| *n == 3),
        "{:?}",
        handler.calls()
    );
}

#[tokio::test]
async fn a_re_driven_dead_letter_is_applied_once_and_deleted_with_its_writes() {
    let fixture = fixture(4).await;
    // Fails the batch and its two attempts alone, then works: the re-drive succeeds.
    let handler = Arc::new(Scripted::new().failing(3, 3));
    let mut running = start(&fixture, &handler, policy(2, OnFailure::Skip));
    running.reaches(4).await;
    assert_eq!(seen(&fixture.store, &fixture.generation).await, [1, 2, 4]);
    let marked = fixture
        .store
        .request_dead_letter_retry("scripted", None)
        .await
        .expect("request a re-drive");
    assert_eq!(marked, 1);
    let store = Arc::clone(&fixture.store);
    tokio::time::timeout(STALL, async {
        while !store.dead_letters(None).await.expect("read").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dead letter was not re-driven");
    assert_eq!(running.stop().await, DropReason::Shutdown);
    assert_eq!(
        seen(&fixture.store, &fixture.generation).await,
        [1, 2, 4, 3]
    );
    let stored = fixture.store.generations("scripted").await.expect("read");
    assert_eq!(stored[0].checkpoint, 4);
}

#[tokio::test]
async fn a_checkpoint_moved_by_another_writer_stops_the_projector_without_writing() {
    let fixture = fixture(3).await;
    // Another host folded the first two events and moved the checkpoint.
    fixture
        .store
        .commit(&fixture.generation, BatchWrites::default(), 0, 2)
        .await
        .expect("the other writer's commit");
    let handler = Arc::new(Scripted::new());
    let running = start(&fixture, &handler, policy(1, OnFailure::Stop));
    let reason = running.end().await;
    assert!(
        matches!(reason, DropReason::CheckpointMoved(_)),
        "{reason:?}"
    );
    assert!(seen(&fixture.store, &fixture.generation).await.is_empty());
    let stored = fixture.store.generations("scripted").await.expect("read");
    assert_eq!(stored[0].checkpoint, 2);
}

#[tokio::test]
async fn a_building_generation_becomes_active_at_the_head() {
    let fixture = fixture(2).await;
    let handler = Arc::new(Scripted::new());
    let mut running = start(&fixture, &handler, policy(1, OnFailure::Stop));
    running.reaches(2).await;
    tokio::time::timeout(
        STALL,
        running
            .status
            .wait_for(|s| s.generation_state == crate::domain::GenerationState::Active),
    )
    .await
    .expect("the generation was not activated")
    .expect("the projector is gone");
    assert_eq!(running.stop().await, DropReason::Shutdown);
    let served = fixture
        .store
        .get_document("scripted", "seen", "s")
        .await
        .expect("served through the stable name");
    assert_eq!(served, Some(json!({ "_id": "s", "positions": [1, 2] })));
}

#[tokio::test]
async fn a_skipped_events_dead_letter_commits_with_the_checkpoint_or_not_at_all() {
    let fixture = fixture(4).await;
    // Event 3 fails its batch and its one attempt alone; at that last failure another writer
    // moves the checkpoint past it, so the skip's commit is refused.
    let handler = Arc::new(
        Scripted::new()
            .failing(3, 2)
            .with_interloper(&fixture.store, &fixture.generation),
    );
    let running = start(&fixture, &handler, policy(1, OnFailure::Skip));
    let reason = running.end().await;
    assert!(
        matches!(reason, DropReason::CheckpointMoved(_)),
        "{reason:?}"
    );
    // Had the dead letter been recorded apart from its commit, it would stay behind although
    // this projector's skip never committed: after a crash between the two, a restart that
    // handles the event would leave it there, and a re-drive would apply the event twice.
    let letters = fixture.store.dead_letters(None).await.expect("read");
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(seen(&fixture.store, &fixture.generation).await, [1, 2]);
}

/// What `document_writes` records of the scripted projection's commits, beside the row each
/// generation starts with: the stretches of the log handled, each with the documents written.
fn recorded(fixture: &Fixture) -> Vec<(i64, i64, String)> {
    let conn = rusqlite::Connection::open(fixture._dir.path().join("refold.db")).expect("open");
    let mut rows = conn
        .prepare(
            "SELECT after, upto, documents FROM document_writes WHERE projection = 'scripted' AND upto > 0 ORDER BY upto",
        )
        .expect("prepare");
    rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .expect("read the records")
}

/// Once a page has shown its events are small, the next page is longer than the manifest's
/// batch size: it is handed over in calls of that size and committed once, its checkpoint at its
/// end, and what each call wrote is recorded apart.
#[tokio::test]
async fn a_page_is_handled_in_calls_of_the_batch_size_each_recorded_apart() {
    let fixture = fixture(10).await;
    let handler = Arc::new(Scripted::new().batches_of(3));
    let mut running = start(&fixture, &handler, FailurePolicy::default());
    running.reaches(10).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    assert_eq!(handler.calls(), [(1, 3), (4, 3), (7, 3), (10, 1)]);
    let wrote = r#"["seen/s"]"#.to_owned();
    assert_eq!(
        recorded(&fixture),
        [
            (0, 3, wrote.clone()),
            (3, 6, wrote.clone()),
            (6, 9, wrote.clone()),
            (9, 10, wrote)
        ]
    );
    assert_eq!(
        seen(&fixture.store, &fixture.generation).await,
        (1..=10).collect::<Vec<_>>()
    );
}

/// A call failing after others of its page succeeded fails the whole page: nothing of it is
/// committed, the page is read again a batch at a time (the batches before the failing one
/// commit), and the failing batch one event at a time; nothing applies twice.
#[tokio::test]
async fn a_call_failing_late_in_a_page_fails_the_page_and_nothing_applies_twice() {
    let fixture = fixture(10).await;
    let handler = Arc::new(Scripted::new().batches_of(3).failing(8, u32::MAX));
    let mut running = start(&fixture, &handler, policy(1, OnFailure::Skip));
    running.reaches(10).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    assert_eq!(
        handler.calls(),
        [
            (1, 3),
            (4, 3),
            (7, 3),
            (4, 3),
            (7, 3),
            (7, 1),
            (8, 1),
            (9, 1),
            (10, 1)
        ]
    );
    assert_eq!(
        seen(&fixture.store, &fixture.generation).await,
        [1, 2, 3, 4, 5, 6, 7, 9, 10]
    );
    assert_eq!(dead_letters(&fixture).await, 1);
}

/// A group's commit runs while the next group is handled. When the store refuses it, what the
/// next group did is dropped with it: the log is read again from the checkpoint that stayed, the
/// refused group a batch at a time, and the event whose writes are refused is skipped; every
/// other event takes effect once.
#[tokio::test]
async fn a_group_commit_refused_while_the_next_group_is_handled_drops_both_and_reads_them_again() {
    // Pages: 1-100 (one batch, until the events are known small), then groups of 5,000:
    // 101-5100, 5101-10100, 10101-11000. 300 and 5300 claim the same unique value, so the
    // second group's commit is refused, by then the third group has been handled.
    let fixture = fixture(11_000).await;
    let handler = Arc::new(Scripted::new().batches_of(100).claiming(&[300, 5_300]));
    let mut running = start(&fixture, &handler, policy(1, OnFailure::Skip));
    running.reaches(11_000).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    let calls = handler.calls();
    let firsts: Vec<Position> = calls.iter().map(|(first, _)| *first).collect();
    let third_group = firsts.iter().position(|&f| f == 10_101);
    let read_again = firsts.iter().rposition(|&f| f == 5_101);
    assert!(
        third_group.is_some_and(|t| read_again.is_some_and(|r| t < r)),
        "the third group was not handled while the second one's commit ran: {calls:?}"
    );
    // Read again: a batch at a time up to the refused one, then one event at a time through it.
    let singles = calls.iter().filter(|(_, n)| *n == 1).count();
    assert_eq!(singles, 100, "{calls:?}");
    let mut expected: Vec<Position> = (1..=11_000).collect();
    expected.retain(|&p| p != 5_300);
    assert_eq!(seen(&fixture.store, &fixture.generation).await, expected);
    let letters = fixture.store.dead_letters(None).await.expect("read");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].position, 5_300);
}

/// The store's commits, each recorded (the checkpoint it moves to), made to wait first when
/// `slow` (a group's commit is then certainly still running while the next group is handled),
/// and refused with a lost lease when it would move the checkpoint to `lost_at` (another host
/// has taken the generation over meanwhile).
struct Commits {
    store: Arc<dyn Store>,
    slow: bool,
    lost_at: Option<Position>,
    made: Mutex<Vec<Position>>,
    /// Rung as each commit starts.
    begun: tokio::sync::Notify,
}

impl Commits {
    fn slow(store: &Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store: Arc::clone(store),
            slow: true,
            lost_at: None,
            made: Mutex::new(Vec::new()),
            begun: tokio::sync::Notify::new(),
        })
    }

    fn losing_lease_at(store: &Arc<dyn Store>, position: Position) -> Arc<Self> {
        Arc::new(Self {
            store: Arc::clone(store),
            slow: false,
            lost_at: Some(position),
            made: Mutex::new(Vec::new()),
            begun: tokio::sync::Notify::new(),
        })
    }

    fn made(&self) -> Vec<Position> {
        self.made.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl crate::store::Checkpoints for Commits {
    async fn commit(
        &self,
        generation: &Generation,
        writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> crate::store::StoreResult<()> {
        if let Ok(mut made) = self.made.lock() {
            made.push(to);
        }
        self.begun.notify_waiters();
        if self.slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if self.lost_at == Some(to) {
            return Err(crate::store::StoreError::LeaseLost("taken over".into()));
        }
        self.store.commit(generation, writes, from, to).await
    }

    fn reader(
        &self,
        generation: &Generation,
    ) -> crate::store::StoreResult<Box<dyn crate::store::DocumentReader>> {
        self.store.reader(generation)
    }
}

/// Counts every event in `seen/total`, and puts a document per event (so the cache between
/// batches passes its bound).
struct Tally(Manifest);

impl Handler for Tally {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn code_hash(&self) -> &str {
        "tally"
    }

    fn handle(
        &self,
        events: &[RecordedEvent],
        mut context: BatchContext,
    ) -> (BatchContext, Result<(), HandleFailure>) {
        for event in events {
            context.set_position(event.position);
            let counted = context
                .update("seen", "total", r#"{"$inc": {"n": 1}}"#, true)
                .and_then(|_| context.put("seen", &format!("e{}", event.position), "{}"));
            if let Err(failure) = counted {
                return (context, Err(HandleFailure::Host(failure.to_string())));
            }
        }
        (context, Ok(()))
    }
}

/// A running projector of [`Tally`], 100 events per call, over `ports`.
fn tally(fixture: &Fixture, ports: ProjectorPorts) -> Running {
    let mut manifest = scripted_manifest();
    manifest.batch_size = Some(100);
    let (stop, stopped) = watch::channel(false);
    let (projector, status) = Projector::new(
        ports,
        Arc::new(Tally(manifest)),
        fixture.generation.clone(),
        stopped,
    );
    let done = tokio::spawn(projector.run());
    Running { status, stop, done }
}

/// A document the last group wrote is read from the batch's cache, never from the store, while
/// that group's commit may still be running: the cache between batches, past its bound, keeps
/// it. (Before, the cache was cleared whole, and the next group read the document as it was
/// before the group: its updates were lost.)
#[tokio::test]
async fn the_next_group_sees_the_writes_of_a_group_whose_commit_is_still_running() {
    let fixture = fixture(11_000).await;
    let mut ports = ProjectorPorts::of(&fixture.store);
    ports.checkpoints = Commits::slow(&fixture.store);
    let mut running = tally(&fixture, ports);
    running.reaches(11_000).await;
    assert_eq!(running.stop().await, DropReason::Shutdown);
    let mut reader = fixture.store.reader(&fixture.generation).expect("reader");
    let total = tokio::task::spawn_blocking(move || reader.get("seen", "total"))
        .await
        .expect("read task")
        .expect("read")
        .and_then(|d| d.get("n").and_then(Value::as_u64));
    assert_eq!(total, Some(11_000));
}

/// The log, whose reads fail once the cursor is past `from`; rings `failing` when one does.
struct FailingReads {
    store: Arc<dyn Store>,
    from: Position,
    failing: Arc<tokio::sync::Notify>,
    /// Reads refused so far.
    failed: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl crate::store::EventLog for FailingReads {
    async fn append_all(
        &self,
        appends: Vec<crate::store::StreamAppend>,
    ) -> crate::store::StoreResult<Vec<crate::domain::AppendResult>> {
        self.store.append_all(appends).await
    }

    async fn import(
        &self,
        batch: crate::store::ImportBatch,
    ) -> crate::store::StoreResult<crate::store::Imported> {
        self.store.import(batch).await
    }

    async fn read_stream(
        &self,
        aggregate_id: &str,
        from_version: crate::domain::StreamVersion,
        limit: usize,
    ) -> crate::store::StoreResult<Vec<RecordedEvent>> {
        self.store
            .read_stream(aggregate_id, from_version, limit)
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &crate::domain::EventFilter,
    ) -> crate::store::StoreResult<crate::store::Page> {
        if after >= self.from {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.failing.notify_one();
            return Err(crate::store::StoreError::backend(
                "read",
                "connection reset",
            ));
        }
        self.store.read_all(after, limit, filter).await
    }

    async fn head(&self) -> crate::store::StoreResult<Position> {
        self.store.head().await
    }

    fn feed(&self) -> watch::Receiver<Position> {
        self.store.feed()
    }
}

/// A projector stopped while a group's commit runs, and while its next read fails, ends only
/// once that commit has landed: the checkpoint it leaves is the one its replacement starts from.
/// (Before, the commit was dropped with the projector, half-way or not at all.)
#[tokio::test]
async fn a_projector_stopped_mid_commit_lets_the_commit_land_before_it_ends() {
    let fixture = fixture(11_000).await;
    let failing = Arc::new(tokio::sync::Notify::new());
    let mut ports = ProjectorPorts::of(&fixture.store);
    let commits = Commits::slow(&fixture.store);
    ports.checkpoints = Arc::clone(&commits) as Arc<dyn crate::store::Checkpoints>;
    // Pages: 1-100, then 101-5100, whose commit runs while the read after 5100 fails (read
    // ahead while 101-5100 is handled, then again once it is).
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    ports.log = Arc::new(FailingReads {
        store: Arc::clone(&fixture.store),
        from: 5_100,
        failing: Arc::clone(&failing),
        failed: Arc::clone(&failed),
    });
    let running = tally(&fixture, ports);
    let failures = || failed.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(STALL, async {
        loop {
            let begun = commits.begun.notified();
            if commits.made().contains(&5_100) {
                break;
            }
            begun.await;
        }
        // A read after 5100 that failed once the commit had begun.
        let before = failures();
        loop {
            let failing = failing.notified();
            if failures() > before {
                break;
            }
            failing.await;
        }
    })
    .await
    .expect("the second page's commit and the read after it never came");
    let _ = running.stop.send(true);
    assert_eq!(running.end().await, DropReason::Shutdown);
    let stored = fixture.store.generations("scripted").await.expect("read");
    assert_eq!(stored[0].checkpoint, 5_100);
}

/// A group's commit that finds the lease lost (on MongoDB, another host runs the generation
/// now) stops the projector while the next group is handled: nothing of that group is committed,
/// and the checkpoint stays where the last landed commit left it.
#[tokio::test]
async fn a_group_commit_that_finds_the_lease_lost_stops_the_projector_and_commits_nothing_more() {
    let fixture = fixture(11_000).await;
    let checkpoints = Commits::losing_lease_at(&fixture.store, 5_100);
    let mut ports = ProjectorPorts::of(&fixture.store);
    ports.checkpoints = Arc::clone(&checkpoints) as Arc<dyn crate::store::Checkpoints>;
    let reason = tally(&fixture, ports).end().await;
    assert!(matches!(reason, DropReason::Superseded(_)), "{reason:?}");
    assert_eq!(checkpoints.made(), [100, 5_100]);
    let stored = fixture.store.generations("scripted").await.expect("read");
    assert_eq!(stored[0].checkpoint, 100);
}
