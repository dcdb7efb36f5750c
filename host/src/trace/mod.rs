//! `refold trace`: the events that changed one document of a projection, in order, with the
//! document after each, what each changed and what the guest logged while handling it.
//!
//! A projection is deterministic, so its history can be replayed. Each commit that writes
//! documents records which ones, and the range of positions the batch handled
//! ([`crate::store::WriteHistory`]); a trace replays only those batches' events, in the
//! projection's real engine and limits but against a scratch copy of its documents, and calls the
//! guest once per event wherever the traced document may change. The replay must end with the
//! document as it is stored: when it does not (the projection's handling of it depended on
//! other documents, or it was written before the store recorded its writes), the whole history
//! up to the generation's checkpoint is replayed instead, and the trace says so.

pub mod diff;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::document::{self, Document};
use crate::domain::{EventFilter, Generation, Position, RecordedEvent};
use crate::projector::{BatchContext, DEFAULT_BATCH_SIZE, GuestLog, Handler};
use crate::store::{BatchWrites, DocumentReader, Store, StoreError, StoreResult, WritingBatch};
use diff::Change;

/// Events read from the store at a time.
const PAGE: usize = 1_000;

/// How a trace failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The projection declares no such collection; the message names those it declares.
    #[error("{0}")]
    UnknownCollection(String),
    /// The document id is not a valid one.
    #[error("{0}")]
    InvalidId(String),
    /// The generation's checkpoint kept moving while its document was read.
    #[error("{0}")]
    Moving(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which events a trace replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Only the batches recorded as writing the document.
    Recorded,
    /// Every event of the projection's subscriptions up to the generation's checkpoint.
    Full,
}

/// One event that changed the document (or failed while changing it).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The event's position.
    pub position: Position,
    /// The event, as the API shows events.
    pub event: Value,
    /// The document after the event; `null` when the event deleted it.
    pub document: Option<Value>,
    /// What the event changed, field by field.
    pub changes: Vec<Change>,
    /// What the guest logged (or printed) while handling the event.
    pub logs: Vec<GuestLog>,
    /// The event failed: its writes were not applied (a `stop` policy parks the projection
    /// there; a `skip` policy records a dead letter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The history of one document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// Projection.
    pub projection: String,
    /// Generation traced.
    pub generation: u32,
    /// Hash of the code that replayed it.
    pub code_hash: String,
    /// Logical collection.
    pub collection: String,
    /// Document id.
    pub id: String,
    /// Which events were replayed.
    pub mode: Mode,
    /// How many events were handed to the projection.
    pub replayed: u64,
    /// The generation's checkpoint: the trace covers the events up to it.
    pub checkpoint: Position,
    /// The events that changed the document, in order.
    pub steps: Vec<Step>,
    /// The document as stored now; `null` when there is none.
    pub document: Option<Value>,
    /// The replay ended with the document as stored.
    pub matches: bool,
    /// What the reader should know about how the trace was made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Trace document `id` of `collection` in `generation`, replaying with `handler` (the
/// generation's code, or code the caller chose: a note says when its hash differs).
/// `full` replays the whole history without looking at the record of writes. `progress` is told
/// the last position replayed and the checkpoint, from time to time.
pub async fn trace(
    store: Arc<dyn Store>,
    handler: Arc<dyn Handler>,
    generation: &Generation,
    collection: &str,
    id: &str,
    full: bool,
    progress: &(dyn Fn(Position, Position) + Sync),
) -> Result<Trace, TraceError> {
    let declared = handler.manifest().collection_names();
    if !declared.iter().any(|c| c == collection) {
        return Err(TraceError::UnknownCollection(format!(
            "`{collection}` is not a collection of projection `{}`; it declares: {}",
            generation.projection,
            declared.join(", ")
        )));
    }
    document::check_id(id).map_err(|e| {
        let shown: String = id.chars().take(64).collect();
        TraceError::InvalidId(format!("document id `{shown}`: {e}"))
    })?;
    let (generation, stored, batches) = stored_document(&store, generation, collection, id).await?;
    let mut trace = Trace {
        projection: generation.projection.clone(),
        generation: generation.number,
        code_hash: handler.code_hash().to_owned(),
        collection: collection.to_owned(),
        id: id.to_owned(),
        mode: Mode::Recorded,
        replayed: 0,
        checkpoint: generation.checkpoint,
        steps: Vec::new(),
        document: stored.clone().map(Value::Object),
        matches: false,
        notes: Vec::new(),
    };
    if handler.code_hash() != generation.code_hash {
        trace.notes.push(format!(
            "replayed with code {} while generation {} runs {}",
            short(handler.code_hash()),
            generation.number,
            short(&generation.code_hash)
        ));
    }
    let target = (collection.to_owned(), id.to_owned());
    if !full {
        match batches {
            Some(batches) if batches.is_empty() && stored.is_none() => {
                trace.matches = true;
                trace
                    .notes
                    .push("no committed batch wrote this document".into());
                return Ok(trace);
            }
            Some(batches) => {
                let replay = Replay::new(&handler, target.clone());
                let replay = replay_batches(&store, replay, &batches, progress).await?;
                if diff::same_document(replay.current().as_ref(), stored.as_ref()) {
                    return Ok(replay.finish(trace, Mode::Recorded));
                }
                trace.notes.push(
                    "replaying the batches that wrote the document did not give it as stored (the \
                     projection's handling of it reads other documents, or the code changed \
                     since): every event was replayed instead"
                        .into(),
                );
            }
            None => trace.notes.push(
                "the store has no record of the batches that wrote this generation's documents \
                 (it was created by a version of Refold that did not record them): every event \
                 was replayed"
                    .into(),
            ),
        }
    }
    let replay = Replay::new(&handler, target);
    let filter = handler.filter();
    let replay = replay_range(&store, replay, &filter, 0, generation.checkpoint, progress).await?;
    let trace = replay.finish(trace, Mode::Full);
    Ok(trace)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// What the stored document was, with the batches recorded as writing it
/// ([`crate::store::WriteHistory`]) and up to which checkpoint.
type Stored = (Generation, Option<Document>, Option<Vec<WritingBatch>>);

/// The generation as stored, the document as of its checkpoint and the batches recorded as
/// writing it: read between two reads of the checkpoint that agree, so a batch committed
/// meanwhile cannot pair one with the other (the record is read after the document, so it holds
/// every batch the document reflects).
async fn stored_document(
    store: &Arc<dyn Store>,
    generation: &Generation,
    collection: &str,
    id: &str,
) -> Result<Stored, TraceError> {
    let current = |store: Arc<dyn Store>| {
        let (projection, number) = (generation.projection.clone(), generation.number);
        async move {
            store
                .generations(&projection)
                .await?
                .into_iter()
                .find(|g| g.number == number)
                .ok_or_else(|| StoreError::NotFound(format!("generation {number} of {projection}")))
        }
    };
    for _ in 0..10 {
        let before = current(Arc::clone(store)).await?;
        let reader = store.reader(&before)?;
        let key = (collection.to_owned(), id.to_owned());
        let document = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            reader.get(&key.0, &key.1)
        })
        .await
        .map_err(|e| StoreError::backend("read the document", e))??;
        let batches = store.batches_writing(&before, collection, id).await?;
        let after = current(Arc::clone(store)).await?;
        if after.checkpoint == before.checkpoint {
            let batches = batches.map(|all| {
                all.into_iter()
                    .filter(|b| b.upto <= after.checkpoint)
                    .collect()
            });
            return Ok((after, document, batches));
        }
    }
    Err(TraceError::Moving(format!(
        "generation {} of `{}` kept moving while its document was read; pause the projection \
         (`refold pause`) or try again",
        generation.number, generation.projection
    )))
}

/// Replay the recorded batches, in commit order: each one's range of positions, and the dead
/// letters it re-drove.
async fn replay_batches(
    store: &Arc<dyn Store>,
    mut replay: Replay,
    batches: &[WritingBatch],
    progress: &(dyn Fn(Position, Position) + Sync),
) -> StoreResult<Replay> {
    let filter = replay.handler.filter();
    let last = batches.last().map_or(0, |b| b.upto);
    let mut done: Position = 0;
    for batch in batches {
        if batch.upto > done {
            replay = replay_range(
                store,
                replay,
                &filter,
                batch.after.max(done),
                batch.upto,
                &|_, _| {},
            )
            .await?;
            done = batch.upto;
        }
        for position in &batch.redriven {
            let page = store
                .read_all(position.saturating_sub(1), 1, &filter)
                .await?;
            let events: Vec<RecordedEvent> = page
                .events
                .into_iter()
                .filter(|e| e.position == *position)
                .collect();
            replay = feed(replay, events).await?;
        }
        progress(done, last);
    }
    Ok(replay)
}

/// Replay the projection's events after `after` up to `upto`.
async fn replay_range(
    store: &Arc<dyn Store>,
    mut replay: Replay,
    filter: &EventFilter,
    after: Position,
    upto: Position,
    progress: &(dyn Fn(Position, Position) + Sync),
) -> StoreResult<Replay> {
    let mut from = after;
    while from < upto {
        let page = store.read_all(from, PAGE, filter).await?;
        let events: Vec<RecordedEvent> = page
            .events
            .into_iter()
            .filter(|e| e.position <= upto)
            .collect();
        if page.scanned_to <= from {
            break;
        }
        from = page.scanned_to.min(upto);
        replay = feed(replay, events).await?;
        progress(from, upto);
    }
    Ok(replay)
}

/// Hand events to the replay on a blocking thread (the guest runs there).
async fn feed(mut replay: Replay, events: Vec<RecordedEvent>) -> StoreResult<Replay> {
    if events.is_empty() {
        return Ok(replay);
    }
    tokio::task::spawn_blocking(move || {
        replay.feed(&events);
        replay
    })
    .await
    .map_err(|e| StoreError::backend("replay", e))
}

/// The documents of a replay, shared by its contexts' readers: as compact JSON, a fifth of the
/// memory of parsed documents (a replay of a long history holds many).
type Scratch = Arc<Mutex<HashMap<(String, String), Box<str>>>>;

/// Reads of a replay's scratch documents.
struct ScratchReader(Scratch);

impl DocumentReader for ScratchReader {
    fn get(&mut self, collection: &str, id: &str) -> StoreResult<Option<Map<String, Value>>> {
        let documents = self
            .0
            .lock()
            .map_err(|_| StoreError::backend("trace", "a replay panicked"))?;
        documents
            .get(&(collection.to_owned(), id.to_owned()))
            .map(|text| serde_json::from_str(text))
            .transpose()
            .map_err(|e| StoreError::backend("trace", e))
    }
}

/// A replay in progress: the scratch documents and the steps found so far.
struct Replay {
    handler: Arc<dyn Handler>,
    documents: Scratch,
    target: (String, String),
    batch_size: usize,
    steps: Vec<Step>,
    replayed: u64,
}

impl Replay {
    fn new(handler: &Arc<dyn Handler>, target: (String, String)) -> Self {
        let batch_size = handler.manifest().batch_size.unwrap_or(DEFAULT_BATCH_SIZE) as usize;
        Self {
            handler: Arc::clone(handler),
            documents: Scratch::default(),
            target,
            batch_size: batch_size.max(1),
            steps: Vec::new(),
            replayed: 0,
        }
    }

    fn context(&self) -> BatchContext {
        BatchContext::new(
            self.handler.manifest(),
            Box::new(ScratchReader(Arc::clone(&self.documents))),
        )
    }

    /// The traced document as the replay has it.
    fn current(&self) -> Option<Document> {
        let documents = self.documents.lock().ok()?;
        serde_json::from_str(documents.get(&self.target)?).ok()
    }

    fn touches(&self, writes: &BatchWrites) -> bool {
        writes
            .documents
            .iter()
            .any(|(c, i, _)| *c == self.target.0 && *i == self.target.1)
    }

    fn apply(&self, writes: BatchWrites) {
        let Ok(mut documents) = self.documents.lock() else {
            return;
        };
        for (collection, id, document) in writes.documents {
            match document {
                Some(document) => {
                    let text = serde_json::to_string(&*document).unwrap_or_default();
                    documents.insert((collection, id), text.into_boxed_str())
                }
                None => documents.remove(&(collection, id)),
            };
        }
    }

    /// Replay events in batches of the projection's size, the traced document watched (the
    /// guest is called once per event, in one instance per batch; a projector catching up keeps
    /// an instance across the batches it commits together, which only a guest keeping state in
    /// its memory could tell apart). A
    /// batch that fails is replayed again one event at a time, each in a context of its own, to
    /// find which events failed and what the others wrote.
    fn feed(&mut self, events: &[RecordedEvent]) {
        for batch in events.chunks(self.batch_size) {
            let mut context = self.context();
            context.keep_logs();
            let before = self.current().map(Arc::new);
            context.watch(&self.target.0, &self.target.1, before);
            let (mut context, outcome) = self.handler.handle(batch, context);
            if outcome.is_ok() {
                let mut before = self.current();
                for watched in context.take_watched() {
                    let after = watched.document.map(Arc::unwrap_or_clone);
                    if let Some(event) = batch.iter().find(|e| e.position == watched.position) {
                        self.step(event, before.as_ref(), after.as_ref(), watched.logs, None);
                    }
                    before = after;
                }
                self.apply(context.take_writes());
            } else {
                for event in batch {
                    self.one(event);
                }
            }
            self.replayed += batch.len() as u64;
        }
    }

    /// Replay one event in a context of its own (see [`Self::feed`]).
    fn one(&mut self, event: &RecordedEvent) {
        let mut context = self.context();
        context.keep_logs();
        let (mut context, outcome) = self.handler.handle(std::slice::from_ref(event), context);
        let logs = context.take_logs();
        let writes = context.take_writes();
        let touched = self.touches(&writes);
        let before = self.current();
        let failure = match outcome {
            Ok(()) => {
                self.apply(writes);
                None
            }
            Err(failure) => Some(failure.to_string()),
        };
        if touched {
            let after = self.current();
            self.step(event, before.as_ref(), after.as_ref(), logs, failure);
        }
    }

    /// Record the event as a step when it changed the document, or failed while writing it.
    fn step(
        &mut self,
        event: &RecordedEvent,
        before: Option<&Document>,
        after: Option<&Document>,
        logs: Vec<GuestLog>,
        failure: Option<String>,
    ) {
        let changes = diff::changes(before, after);
        if changes.is_empty() && failure.is_none() && before.is_some() == after.is_some() {
            return;
        }
        self.steps.push(Step {
            position: event.position,
            event: event.to_json(),
            document: after.cloned().map(Value::Object),
            changes,
            logs,
            failure,
        });
    }

    fn finish(self, mut trace: Trace, mode: Mode) -> Trace {
        let current = self.current();
        trace.matches = diff::same_document(
            current.as_ref(),
            trace.document.as_ref().and_then(Value::as_object),
        );
        if !trace.matches {
            trace.notes.push(
                "the replay does not end with the document as stored: the code replayed is not \
                 the code that wrote it, or the projection is not deterministic"
                    .into(),
            );
        }
        trace.mode = mode;
        trace.replayed = self.replayed;
        trace.steps = self.steps;
        trace
    }
}
