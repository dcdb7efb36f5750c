//! The storage boundary: what the host needs from an event store and a read-model store, with
//! one implementation per backend. Knows nothing of wasmtime.
//!
//! Terms:
//! - **head**: the highest position committed so far.
//! - **checkpoint**: the last position a generation has folded into its documents; it commits
//!   in the same transaction as the documents, so a batch takes effect exactly once.
//! - **change feed**: a doorbell that rings with the head after appends. The events stay the
//!   source of truth: a woken reader reads by position, so a missed ring loses nothing.

pub mod batch;
#[cfg(feature = "mongodb")]
pub mod mongo;
pub mod sqlite;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::domain::extjson;
use crate::domain::{
    AppendResult, EventFilter, ExpectedVersion, Generation, GenerationState, Manifest, NewEvent,
    Position, RecordedEvent, StreamVersion,
};
pub use batch::BatchWrites;
pub use crate::domain::query::{Query, QueryError};

/// Errors from a store, for callers to branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The expected version did not match the stream.
    #[error(
        "concurrency conflict on stream `{aggregate_id}`: expected version {expected}, stream is at {actual}"
    )]
    Conflict {
        /// The stream.
        aggregate_id: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version (0 when it does not exist).
        actual: StreamVersion,
    },
    /// The request itself is invalid (bad stream id, bad event, empty append...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The generation's checkpoint moved under us: another writer handled the same events.
    #[error(
        "checkpoint of {projection} generation {generation} is {found}, expected {expected}: another host is processing it"
    )]
    CheckpointMoved {
        /// Projection.
        projection: String,
        /// Generation number.
        generation: u32,
        /// The checkpoint the committer started from.
        expected: Position,
        /// The checkpoint found.
        found: Position,
    },
    /// A projection or generation that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The URI does not name a supported store.
    #[error(
        "unsupported store URI `{0}`: use sqlite://PATH or mongodb://HOST:PORT/DATABASE?replicaSet=NAME"
    )]
    UnsupportedUri(String),
    /// The backend failed.
    #[error("{context}: {message}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's message.
        message: String,
    },
}

impl StoreError {
    /// A backend failure while doing `context`.
    pub fn backend(context: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Backend {
            context: context.into(),
            message: error.to_string(),
        }
    }
}

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A component file the host refused to deploy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// The file, relative to the projections folder.
    pub component: String,
    /// Why it was refused.
    pub error: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// An event a projection generation skipped after its failure policy's last attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Projection.
    pub projection: String,
    /// Generation that skipped it.
    pub generation: u32,
    /// Declared version of the code that failed.
    pub version: u32,
    /// Position of the event.
    pub position: Position,
    /// Event id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// Stream of the event.
    pub aggregate_id: String,
    /// The last failure.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// An operator asked for it to be re-driven; the projector of its generation will.
    pub retry_requested: bool,
}

/// One page of the global log.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Matching events after the requested position, in position order.
    pub events: Vec<RecordedEvent>,
    /// Every position up to this one has been looked at (matching or not). A reader that
    /// resumes after it skips nothing.
    pub scanned_to: Position,
}

/// One stream's part of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream.
    pub aggregate_id: String,
    /// The version the writer expects it to be at.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// Check the request before it reaches the store.
    pub fn validate(&self) -> StoreResult<()> {
        if self.aggregate_id.is_empty() || self.aggregate_id.len() > 512 {
            return Err(StoreError::InvalidInput(
                "aggregate id must have 1 to 512 bytes".into(),
            ));
        }
        if self.events.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "append to `{}` has no event",
                self.aggregate_id
            )));
        }
        for event in &self.events {
            event.validate().map_err(|e| {
                StoreError::InvalidInput(format!("stream `{}`: {e}", self.aggregate_id))
            })?;
            for (field, value) in [
                ("eventData", &event.event_data),
                ("metadata", &event.metadata),
            ] {
                extjson::check(value).map_err(|e| {
                    StoreError::InvalidInput(format!(
                        "stream `{}`: {}: {field}: {e}",
                        self.aggregate_id, event.event_type
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// An event of the log found by its id, to recognise an append a client sent again.
#[derive(Debug, Clone)]
pub(crate) struct StoredId {
    pub id: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub version: StreamVersion,
    pub position: Position,
}

impl StreamAppend {
    /// The ids the writer gave its events (a retried append is recognised by them alone).
    pub(crate) fn explicit_ids(&self) -> Vec<&str> {
        self.events.iter().filter_map(|e| e.id.as_deref()).collect()
    }

    /// Whether this append was written before, from the stored events that carry its ids: the
    /// first result again when it is the same append retried (every event stored under its id,
    /// in this stream, in this order, with the same types), `None` when none of its ids exists,
    /// and an error naming the id otherwise. A client that lost the answer to an append can
    /// send it again without writing its events twice.
    pub(crate) fn already_written(&self, stored: &[StoredId]) -> StoreResult<Option<AppendResult>> {
        let Some(first_found) = self
            .events
            .iter()
            .filter_map(|e| e.id.as_deref())
            .find_map(|id| stored.iter().find(|s| s.id == id))
        else {
            return Ok(None);
        };
        let found: Option<Vec<&StoredId>> = self
            .events
            .iter()
            .map(|e| {
                e.id.as_deref()
                    .and_then(|id| stored.iter().find(|s| s.id == id))
            })
            .collect();
        if let Some(found) = found {
            let same = found
                .iter()
                .zip(&self.events)
                .all(|(s, e)| s.aggregate_id == self.aggregate_id && s.event_type == e.event_type);
            let in_order = found
                .windows(2)
                .all(|w| w[1].version == w[0].version + 1 && w[1].position == w[0].position + 1);
            if let (true, true, Some(first), Some(last)) =
                (same, in_order, found.first(), found.last())
            {
                return Ok(Some(AppendResult {
                    first_position: first.position,
                    last_position: last.position,
                    version: last.version,
                }));
            }
        }
        Err(StoreError::InvalidInput(format!(
            "event id `{}` already exists (stream `{}`, version {}, type `{}`): an append sent \
             again must repeat the same events, in the same order, with the same ids",
            first_found.id, first_found.aggregate_id, first_found.version, first_found.event_type
        )))
    }
}

/// The event store: append-only streams with a global, gap-free position.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Append to several streams in one transaction: every event of every stream, or none
    /// (a conflict on any stream refuses all). Positions are assigned in commit order, so a
    /// reader paging by position can never skip one. A part whose events carry ids that are
    /// stored already, as the same events of the same stream, is a retry: it writes nothing and
    /// answers its first result, whatever its expected version.
    async fn append_all(&self, appends: Vec<StreamAppend>) -> StoreResult<Vec<AppendResult>>;

    /// Append events to one stream atomically.
    async fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        let append = StreamAppend {
            aggregate_id: aggregate_id.to_owned(),
            expected,
            events,
        };
        let mut results = self.append_all(vec![append]).await?;
        results
            .pop()
            .ok_or_else(|| StoreError::backend("append", "no result"))
    }

    /// Events of one stream with version >= `from_version`, in order, at most `limit`.
    async fn read_stream(
        &self,
        aggregate_id: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>>;

    /// Events with position > `after` that match `filter`, in order, at most `limit`.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> StoreResult<Page>;

    /// The highest committed position.
    async fn head(&self) -> StoreResult<Position>;

    /// The change feed: a receiver of the head, rung after appends (this process's and, within
    /// a short polling interval, other processes').
    fn feed(&self) -> watch::Receiver<Position>;
}

/// Synchronous point reads of a generation's documents, for host calls made from inside a
/// guest. Each projector owns one.
pub trait DocumentReader: Send {
    /// The document with this id in the generation's collection, if any.
    fn get(&mut self, collection: &str, id: &str) -> StoreResult<Option<Map<String, Value>>>;
}

/// Read collections, generations and checkpoints.
#[async_trait]
pub trait ReadModelStore: Send + Sync {
    /// The generations of a projection, oldest first.
    async fn generations(&self, projection: &str) -> StoreResult<Vec<Generation>>;

    /// Every generation of every projection, by projection then number.
    async fn all_generations(&self) -> StoreResult<Vec<Generation>>;

    /// Register a new generation in state `building` with checkpoint 0, create its collections
    /// and indexes, and return it.
    async fn create_generation(
        &self,
        manifest: &Manifest,
        code_hash: &str,
    ) -> StoreResult<Generation>;

    /// Make the physical collections and indexes of a generation exist and record them as its
    /// collections; for an active generation, also make their stable names exist (idempotent).
    async fn prepare_collections(
        &self,
        generation: &Generation,
        manifest: &Manifest,
    ) -> StoreResult<()>;

    /// Record the code a generation now runs (same version, new code swapped in place).
    async fn set_code(&self, generation: &Generation, code_hash: &str) -> StoreResult<()>;

    /// Commit a batch: apply its writes to the generation's collections, delete the dead letters
    /// it re-drove, and move its checkpoint from `from` to `to` (or keep it, `from == to`), in
    /// one transaction. Fails with [`StoreError::CheckpointMoved`]
    /// (changing nothing) when the stored checkpoint is not `from`.
    async fn commit(
        &self,
        generation: &Generation,
        writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> StoreResult<()>;

    /// Make a generation the active one: the stable names point at its collections, and the
    /// previously active generation moves to `previous` (retired after a cut-over, rolled back
    /// after a rollback). Stable names of collections the generation lacks are removed. On
    /// SQLite this is one transaction; on MongoDB each stable name switches atomically.
    async fn activate(&self, generation: &Generation, previous: GenerationState)
    -> StoreResult<()>;

    /// Set a generation's life-cycle state (to abandon a building one).
    async fn set_state(&self, generation: &Generation, state: GenerationState) -> StoreResult<()>;

    /// Record why a component file was refused (`Some`), or that it deployed (`None`).
    async fn record_refusal(&self, component: &str, error: Option<&str>) -> StoreResult<()>;

    /// The component files currently refused, by name.
    async fn refusals(&self) -> StoreResult<Vec<Refusal>>;

    /// Record (or clear) the error a generation's projector stopped on.
    async fn set_error(&self, generation: &Generation, error: Option<&str>) -> StoreResult<()>;

    /// A synchronous reader of the generation's documents.
    fn reader(&self, generation: &Generation) -> StoreResult<Box<dyn DocumentReader>>;

    /// A document of the active generation, through the stable name.
    async fn get_document(
        &self,
        projection: &str,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Value>>;

    /// The documents of the active generation's collection that match a query, in its order.
    /// [`StoreError::NotFound`] when the collection is not served (yet).
    async fn find_documents(
        &self,
        projection: &str,
        collection: &str,
        query: &Query,
    ) -> StoreResult<Vec<Value>>;

    /// Record a dead letter; recording the same (projection, generation, position) again
    /// replaces it, so a crash between recording and moving the checkpoint duplicates nothing.
    async fn record_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()>;

    /// Dead letters of one projection (or all), by projection, generation and position.
    async fn dead_letters(&self, projection: Option<&str>) -> StoreResult<Vec<DeadLetter>>;

    /// Delete a projection's dead letters at these positions (all of them for `None`); returns
    /// how many were deleted.
    async fn discard_dead_letters(
        &self,
        projection: &str,
        positions: Option<&[Position]>,
    ) -> StoreResult<u64>;

    /// Ask for a projection's dead letters at these positions (all for `None`) to be re-driven
    /// by the projectors of their generations; returns how many were marked.
    async fn request_dead_letter_retry(
        &self,
        projection: &str,
        positions: Option<&[Position]>,
    ) -> StoreResult<u64>;

    /// Pause a projection (`true`: its projectors stop at a batch boundary on every host, its
    /// read collections keep serving) or resume it (`false`: it continues from its checkpoints).
    async fn set_paused(&self, projection: &str, paused: bool) -> StoreResult<()>;

    /// The paused projections.
    async fn paused(&self) -> StoreResult<BTreeSet<String>>;

    /// The documents of the active generation's collection, ordered by id, at most `limit`.
    async fn list_documents(
        &self,
        projection: &str,
        collection: &str,
        limit: usize,
    ) -> StoreResult<Vec<Value>>;
}

/// Ring a change feed with a new head; a lower or equal position changes nothing, so rings from
/// several sources (this process's appends, a poller, a change stream) can race safely.
pub(crate) fn ring(feed: &watch::Sender<Position>, position: Position) {
    feed.send_if_modified(|head| {
        let moved = position > *head;
        *head = (*head).max(position);
        moved
    });
}

/// Both halves of a store.
pub trait Store: EventStore + ReadModelStore {}

impl<T: EventStore + ReadModelStore> Store for T {}

/// Open the store a URI names: `sqlite://PATH` (a file, created if missing) or
/// `mongodb://...` / `mongodb+srv://...` (a replica set; the database named in the path,
/// `refold` by default).
pub async fn open(uri: &str) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = uri.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::InvalidInput(
                "sqlite:// needs a file path, e.g. sqlite://refold.db".into(),
            ));
        }
        let store = sqlite::SqliteStore::open(std::path::Path::new(path)).await?;
        return Ok(Arc::new(store));
    }
    if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        #[cfg(feature = "mongodb")]
        return Ok(Arc::new(mongo::MongoStore::open(uri).await?));
        #[cfg(not(feature = "mongodb"))]
        return Err(StoreError::InvalidInput(format!(
            "`{uri}` names a MongoDB store, but this build of refold has no MongoDB support: \
             build it with the `mongodb` feature (on by default)"
        )));
    }
    Err(StoreError::UnsupportedUri(uri.to_owned()))
}
