//! The store's ports: one narrow trait per concern, each stating its contract, so a caller
//! holds only what it uses: a projector the log, checkpoints, dead letters and the generation
//! registry; the supervisor the registry and operator state; operator commands the registry,
//! dead letters and operator state. Both backends implement every port; [`super::Store`] is all
//! of them, for the wiring that opens a store and hands ports out (the command line, the HTTP
//! API, which serves every concern, and the deploy loop).
//!
//! Rules that every backend must follow (which generation number comes next, what a moved
//! checkpoint means, which names a cut-over repoints) are not written here or in a backend but
//! once, in [`super::generations`]; a backend only performs the storage operations.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{
    BatchWrites, ImportBatch, Imported, StoreError, StoreResult, StreamAppend, WritingBatch,
};
use crate::domain::query::Query;
use crate::domain::{
    AppendResult, EventFilter, ExpectedVersion, Generation, GenerationState, Manifest, NewEvent,
    Position, RecordedEvent, StreamVersion,
};

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

/// The event log: append-only streams with a global, gap-free position, and a change feed.
#[async_trait]
pub trait EventLog: Send + Sync {
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

    /// Store events of an existing history in one transaction (the rules are in
    /// [`super::ImportedEvent`]; the batch was checked when it was made): each keeps its id, stream version and time and takes the next
    /// position, in the order given. An event whose stream holds its version already is skipped
    /// when it is the same event; otherwise, and when a version does not follow its stream's
    /// last, nothing is stored and the error names where the event came from.
    async fn import(&self, batch: ImportBatch) -> StoreResult<Imported>;

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

    /// Whether the generation's collections hold no document at all. A projector that finds
    /// them empty knows that a document it has not written does not exist, and reads none (a
    /// replay from the origin creates most of its documents). `false` when the reader cannot
    /// tell.
    fn is_empty(&mut self) -> StoreResult<bool> {
        Ok(false)
    }
}

/// Which batches wrote which document. Each commit that writes documents records, in its own
/// transaction, the range of positions it handled and the documents it wrote; `refold trace`
/// reads that record to replay only the events that could have changed one document.
#[async_trait]
pub trait WriteHistory: Send + Sync {
    /// The committed batches of a generation that wrote this document, in commit order; `None`
    /// when the generation's writes are not all recorded (it was created by a Refold that did
    /// not record them), so the batches found could leave some out. A generation is marked as
    /// recorded from its start when it is created (a record of no documents at position 0).
    async fn batches_writing(
        &self,
        generation: &Generation,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Vec<WritingBatch>>>;
}

/// A generation's lease, as stored: who runs it, under which fencing token, renewed when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Projection.
    pub projection: String,
    /// Generation number.
    pub generation: u32,
    /// The host holding it.
    pub owner: String,
    /// Its fencing token: it moves on each time another host takes the lease over.
    pub epoch: u64,
    /// Milliseconds since its last renewal, by this host's clock; none for a lease given up.
    pub age_ms: Option<u64>,
    /// Whether it is held: renewed within its owner's lease time (an expired lease may be
    /// taken over by any host).
    pub live: bool,
}

/// A host alive on a store several hosts share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its name.
    pub name: String,
    /// The generations it would run, as `(projection, number)`.
    pub wants: Vec<(String, u32)>,
    /// Whether it is this host.
    pub this: bool,
}

/// One owner per generation when several hosts serve projections from one store (MongoDB).
///
/// A host takes a generation's lease before it runs its projector and renews it while it does;
/// a lease its owner stops renewing expires after the lease time, and another host may take it
/// over, which moves its epoch on. Every batch commit checks the epoch in its own transaction
/// (the fencing token), so a host that lost a lease (paused, cut off, slow) can never commit to
/// that generation again. Hosts also renew their own presence, so each knows how many share the
/// work. The embedded store is held by one host (its file lock): it takes every lease at once
/// and has no other host.
#[async_trait]
pub trait Leases: Send + Sync {
    /// How long a lease lasts without renewal, when several hosts may share this store (leases
    /// then decide who runs what); `None` when one host holds the store.
    fn lease_time(&self) -> Option<std::time::Duration>;

    /// Take a generation's lease for this host, or keep it when held; whether it is held now.
    async fn take_lease(&self, generation: &Generation) -> StoreResult<bool>;

    /// Record the generations this host would run (`wants`, as `(projection, number)`), which
    /// its presence carries; returns the generations whose lease another host took over since
    /// the last call. (A task of the store renews the host's presence and leases, three times
    /// per lease time, whatever else the host is doing.)
    async fn renew_leases(&self, wants: &[(String, u32)]) -> StoreResult<Vec<(String, u32)>>;

    /// Give a generation's lease up, so another host may take it at once.
    async fn release_lease(&self, projection: &str, generation: u32) -> StoreResult<()>;

    /// The generations whose lease this host holds, as `(projection, number)`.
    fn held_leases(&self) -> Vec<(String, u32)>;

    /// Leave: stop renewing, and withdraw this host's presence, so the others count it out at
    /// once (its leases are given up one by one before).
    async fn leave(&self) -> StoreResult<()>;

    /// The hosts alive (renewed within the lease time), this one included, by name.
    async fn live_hosts(&self) -> StoreResult<Vec<Host>>;

    /// Every lease, by projection and generation.
    async fn leases(&self) -> StoreResult<Vec<Lease>>;
}

/// A component published to a store several hosts serve (see [`Components`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Its name: the file's path under the projections folder that published it, or the name
    /// `refold deploy` gave.
    pub name: String,
    /// The SHA-256 of its bytes, in hex.
    pub hash: String,
    /// What it declares: `projection NAME` or `upcaster NAME` (one published component at a
    /// time declares each).
    pub declares: String,
    /// Its size in bytes.
    pub size: u64,
    /// Who published it: `folder HOST:PATH` for a host's watched folder, `deploy HOST` for
    /// `refold deploy`.
    pub source: String,
    /// When, in milliseconds since the epoch.
    pub published_at_ms: i64,
}

/// Components kept in the store, so that every host serving it runs the same code whichever
/// host's folder (or `refold deploy`) published it (MongoDB). Bytes are kept by their hash,
/// in chunks; the deployment is the set of published names, each naming one hash. The
/// embedded store is served by one host, whose folder is the deployment: it keeps none.
#[async_trait]
pub trait Components: Send + Sync {
    /// Whether this store keeps published components (else hosts deploy their folder).
    fn publishes(&self) -> bool;

    /// Keep `bytes` under their hash (once, whoever else kept them) and publish them as `name`,
    /// a component that `declares` a projection or an upcaster (`projection NAME`), recording
    /// that `source` published them; returns the publication, and whether it changed anything
    /// (other bytes, or a new name). The publication, the record and the deployment's revision
    /// change in one transaction. [`StoreError::InvalidInput`] when another name publishes a
    /// component that declares the same, so every host reads one component for each.
    async fn publish(
        &self,
        name: &str,
        bytes: &[u8],
        source: &str,
        declares: &str,
    ) -> StoreResult<(Published, bool)>;

    /// Withdraw the component published as `name` (only while it names the bytes `hash`, when
    /// given): every host stops it, its data stays. Whether one was withdrawn. What `source`
    /// published under the name is forgotten either way (when given).
    async fn unpublish(
        &self,
        name: &str,
        hash: Option<&str>,
        source: Option<&str>,
    ) -> StoreResult<bool>;

    /// The components published, by name.
    async fn published(&self) -> StoreResult<Vec<Published>>;

    /// What `source` last published under each name (its hash), withdrawn or replaced since or
    /// not: a folder publishes again only the files that changed since.
    async fn published_by(&self, source: &str) -> StoreResult<BTreeMap<String, String>>;

    /// The bytes kept under a hash, checked against it; `None` when none are kept.
    async fn component(&self, hash: &str) -> StoreResult<Option<Vec<u8>>>;

    /// The deployment's revision: it moves on with every publication and withdrawal that
    /// changes something (0 on a store that keeps no components). A host that read the
    /// revision before the components published knows it saw every change up to it.
    async fn deployment_revision(&self) -> StoreResult<u64>;
}

/// Checkpoint-guarded commits: the only way a generation's documents change.
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// Commit a batch (on a shared store, only under the generation's lease: else
    /// [`StoreError::LeaseLost`], and nothing changes): apply its writes to the generation's collections, record which documents
    /// it wrote ([`WriteHistory`]), record the dead letters of the events it skipped, delete
    /// those it re-drove, and move its checkpoint from `from`
    /// to `to` (or keep it, `from == to`), in one transaction. When the stored checkpoint is not `from`, nothing changes and the error
    /// is the one [`super::generations::guard_checkpoint`] gives
    /// ([`StoreError::CheckpointMoved`], or [`StoreError::NotFound`] for a generation that is
    /// gone).
    async fn commit(
        &self,
        generation: &Generation,
        writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> StoreResult<()>;

    /// A synchronous reader of the generation's documents, as committed.
    fn reader(&self, generation: &Generation) -> StoreResult<Box<dyn DocumentReader>>;
}

/// The generation registry: each projection's generations, their code, state and last error,
/// and the cut-over that makes one of them the served one.
#[async_trait]
pub trait Generations: Send + Sync {
    /// The generations of a projection, oldest first.
    async fn generations(&self, projection: &str) -> StoreResult<Vec<Generation>>;

    /// Every generation of every projection, by projection then number.
    async fn all_generations(&self) -> StoreResult<Vec<Generation>>;

    /// Register the projection's next generation ([`super::generations::next`]: the number after
    /// the highest ever registered, even by another host at the same moment) in state
    /// `building` with checkpoint 0, built by this code behind these upcasters (their code
    /// hashes, sorted), create its collections and indexes, and return it; unless, when the
    /// caller says which generations it planned from (`seen`: the newest number it read, 0 for
    /// none), another writer registered one alike since
    /// ([`super::generations::registered_since`]): that one is returned, so hosts that plan
    /// alike from the same published code build one generation.
    async fn create_generation(
        &self,
        manifest: &Manifest,
        code_hash: &str,
        upcasters: &[String],
        seen: Option<u32>,
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

    /// Make a generation the active one, as [`super::generations::cut_over`] plans it: the
    /// stable names point at its collections, those of collections it lacks are removed, and
    /// the previously active generation moves to `previous` (retired after a cut-over, rolled
    /// back after a rollback). On SQLite this is one transaction; on MongoDB each stable name
    /// switches atomically. A generation in a state that may not be activated is refused with
    /// [`StoreError::InvalidInput`].
    async fn activate(&self, generation: &Generation, previous: GenerationState)
    -> StoreResult<()>;

    /// Take a building generation out of building, to `state` (abandoned or rolled back, see
    /// [`super::generations::may_leave_building`]): a compare-and-set, true when the generation
    /// was still building and now is `state`, false when it had left building meanwhile (it
    /// caught up and was activated, for instance). Another target state is refused with
    /// [`StoreError::InvalidInput`].
    async fn set_state(&self, generation: &Generation, state: GenerationState)
    -> StoreResult<bool>;

    /// Record (or clear) the error a generation's projector stopped on.
    async fn set_error(&self, generation: &Generation, error: Option<&str>) -> StoreResult<()>;
}

/// Reads of the served documents: the active generation's collections, by stable name.
#[async_trait]
pub trait Documents: Send + Sync {
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

    /// The documents of the active generation's collection, ordered by id, at most `limit`.
    async fn list_documents(
        &self,
        projection: &str,
        collection: &str,
        limit: usize,
    ) -> StoreResult<Vec<Value>>;
}

/// Where a page of dead letters starts: after this one, in (projection, generation, position)
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterKey {
    /// Projection.
    pub projection: String,
    /// Generation.
    pub generation: u32,
    /// Position of the event.
    pub position: Position,
}

impl DeadLetter {
    /// Where a page that follows this dead letter starts.
    pub fn key(&self) -> DeadLetterKey {
        DeadLetterKey {
            projection: self.projection.clone(),
            generation: self.generation,
            position: self.position,
        }
    }
}

/// Most dead letters in a page.
pub const MAX_DEAD_LETTER_PAGE: usize = 1_000;

/// Events a failure policy skipped, and the operator's requests to re-drive them.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Record a dead letter, outside a batch (a re-drive that failed again); recording the same
    /// (projection, generation, position) again replaces it. A skipped event's dead letter is
    /// not recorded here but committed with its batch ([`BatchWrites::dead_letters`]).
    async fn record_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()>;

    /// A page of the dead letters of one projection (or all): at most `limit` (at most
    /// [`MAX_DEAD_LETTER_PAGE`]), after `after`, by projection, generation and position. Read
    /// by the store page by page, however many there are.
    async fn dead_letter_page(
        &self,
        projection: Option<&str>,
        after: Option<&DeadLetterKey>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetter>>;

    /// Every dead letter of one projection (or all), by projection, generation and position,
    /// read page by page: for tools that want them all, not for anything that runs often.
    async fn dead_letters(&self, projection: Option<&str>) -> StoreResult<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        loop {
            let after = letters.last().map(DeadLetter::key);
            let page = self
                .dead_letter_page(projection, after.as_ref(), MAX_DEAD_LETTER_PAGE)
                .await?;
            let more = page.len() == MAX_DEAD_LETTER_PAGE;
            letters.extend(page);
            if !more {
                return Ok(letters);
            }
        }
    }

    /// How many dead letters each projection has (projections without any are absent), counted
    /// by the store: what a status page needs, without loading the letters.
    async fn count_dead_letters(&self) -> StoreResult<BTreeMap<String, u64>>;

    /// The dead letters of one generation that an operator asked to re-drive, by position:
    /// found by the store, so a projector looking for them each second loads no other.
    async fn dead_letters_to_redrive(
        &self,
        projection: &str,
        generation: u32,
    ) -> StoreResult<Vec<DeadLetter>>;

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
}

/// What operators and deploys leave for every host to see: refused component files and paused
/// projections.
#[async_trait]
pub trait OperatorState: Send + Sync {
    /// Record why a component file was refused (`Some`), or that it deployed (`None`).
    async fn record_refusal(&self, component: &str, error: Option<&str>) -> StoreResult<()>;

    /// The component files currently refused, by name.
    async fn refusals(&self) -> StoreResult<Vec<Refusal>>;

    /// Pause a projection (`true`: its projectors stop at a batch boundary on every host, its
    /// read collections keep serving) or resume it (`false`: it continues from its checkpoints).
    async fn set_paused(&self, projection: &str, paused: bool) -> StoreResult<()>;

    /// The paused projections.
    async fn paused(&self) -> StoreResult<BTreeSet<String>>;
}
