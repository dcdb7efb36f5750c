//! The batch context: what a handler's collection calls operate on while a batch runs.
//!
//! Reads see the batch's earlier writes; writes are staged per document and reach the store only
//! through [`BatchContext::take_writes`], committed with the checkpoint. Documents read or
//! written by committed batches stay cached (bounded) for the next batch: only this projector
//! writes its generation's collections, and its checkpoint guard makes sure of that. A failed
//! batch clears the cache, so nothing it staged can leak into a retry.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::domain::document::{self, Document, MAX_DOCUMENT_BYTES};
use crate::domain::update::{self, FieldUpdate, UPDATE_GROWTH_SLACK};
use crate::domain::{Manifest, Position, extjson};
use crate::store::{BatchWrites, DocumentReader, FastMap};

/// Most documents one batch may touch.
pub const MAX_DOCUMENTS_PER_BATCH: usize = 100_000;
/// Most bytes of document JSON one batch may write.
pub const MAX_BYTES_PER_BATCH: usize = 64 * 1024 * 1024;
/// Most documents one batch may read from the store (ids that exist or not): each one read is
/// kept for the rest of the batch, so a guest reading without bound would exhaust the host.
pub const MAX_READS_PER_BATCH: usize = 100_000;
/// Most bytes of document JSON one batch may read from the store.
pub const MAX_READ_BYTES_PER_BATCH: usize = 256 * 1024 * 1024;
/// Most clean documents kept cached between batches (beyond those the last batch wrote); a
/// thousand in the unit tests, so that a few thousand events pass it.
const CACHE_LIMIT: usize = if cfg!(test) { 1_000 } else { 50_000 };
/// Most bytes of documents kept cached between batches (as JSON, measured on read and write).
const CACHE_BYTES_LIMIT: usize = 256 * 1024 * 1024;
/// Most bytes of documents kept cached by a projector that reached the head.
const LIVE_CACHE_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Most clean documents kept cached by a projector that reached the head.
const LIVE_CACHE_LIMIT: usize = 1_024;
/// Most documents written that a context keeps track of to know which others do not exist
/// (about 10 bytes each); past it, documents missing from the cache are read.
const MAX_TRACKED_WRITES: usize = 2_000_000;

/// What a context knows of documents missing from its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Absent {
    /// Not asked yet: the first document missing from the cache asks whether the generation's
    /// collections are empty.
    Unasked,
    /// They were empty when asked: a document can exist only if this context wrote it since it
    /// was opened (only this projector writes the generation), so one it never wrote is not
    /// read.
    Unwritten,
    /// Nothing known: every document missing from the cache is read.
    Unknown,
}

/// Why a collection call was refused. Mirrors the WIT `collection-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionFailure {
    /// Not a declared collection.
    #[error("collection `{0}` is not declared in the manifest")]
    UnknownCollection(String),
    /// Bad document id.
    #[error("invalid document id: {0}")]
    InvalidId(String),
    /// Bad document.
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    /// Bad update.
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    /// A per-batch limit was hit.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
}

impl CollectionFailure {
    /// Failures that mean the guest broke the contract: they fail the batch even when the guest
    /// ignores the error it was given.
    fn is_violation(&self) -> bool {
        !matches!(self, Self::InvalidUpdate(_) | Self::Store(_))
    }
}

/// One document as the batch sees it. Shared with the writes handed to the store, so a commit
/// copies no document.
#[derive(Debug, Clone)]
struct Entry {
    document: Option<Arc<Document>>,
    dirty: bool,
    /// An upper bound of the document's size as JSON; `None` until measured.
    size: Option<usize>,
    /// The last call of the handler whose writes name it (see [`BatchContext::end_call`]).
    noted: u64,
}

/// A unique index of a collection: its name and key fields.
type UniqueKeys = (String, Vec<String>);

/// Staged writes and cached reads of one projector, reused across its batches.
pub struct BatchContext {
    reader: Box<dyn DocumentReader>,
    collections: Arc<HashSet<String>>,
    /// Collection -> its unique indexes.
    unique_keys: Arc<HashMap<String, Vec<UniqueKeys>>>,
    /// Collection -> id -> entry: looked up by `&str`, so a cache hit allocates nothing.
    entries: FastMap<String, FastMap<String, Entry>>,
    /// The handler's current call, counted over the context's life.
    call: u64,
    /// The first call of the current batch.
    batch_start: u64,
    /// The documents the current call wrote, as written keys.
    call_keys: Vec<String>,
    /// Each ended call of the batch: its last event and what it wrote.
    calls: Vec<(Position, Vec<String>)>,
    dirty: usize,
    written_bytes: usize,
    /// Documents and bytes read from the store during this batch.
    reads: usize,
    read_bytes: usize,
    position: Position,
    violation: Option<(Position, CollectionFailure)>,
    store_failure: Option<String>,
    /// Time spent waiting on the store for reads, over the context's life: the host's time, not
    /// the guest's, so the guest's deadline does not count it.
    blocked: Duration,
    /// The guest's log lines, when kept ([`BatchContext::keep_logs`]).
    logs: Option<Vec<GuestLog>>,
    /// The document a trace watches, if any.
    watch: Option<Watch>,
    /// Which documents missing from the cache are known not to exist.
    absent: Absent,
    /// Hashes of collection and id of every document staged since the context was opened
    /// (written, deleted, in batches that failed too), while `absent` is not `Unknown`: a
    /// document not in it was never written.
    written: HashSet<u64, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    /// What the handler keeps for its next call of the same batch ([`Self::keep_instance`]).
    kept: Option<Box<dyn Any + Send>>,
}

impl BatchContext {
    /// A context for a projection's generation, reading through `reader`.
    pub fn new(manifest: &Manifest, reader: Box<dyn DocumentReader>) -> Self {
        let collections: HashSet<String> = manifest.collection_names().into_iter().collect();
        let unique_keys = manifest
            .collections
            .iter()
            .map(|c| {
                let unique = c.indexes.iter().filter(|i| i.unique);
                let keys = unique.map(|i| {
                    (
                        i.name.clone(),
                        i.keys.iter().map(|k| k.field.clone()).collect(),
                    )
                });
                (c.name.clone(), keys.collect::<Vec<_>>())
            })
            .filter(|(_, keys)| !keys.is_empty())
            .collect();
        Self {
            reader,
            collections: Arc::new(collections),
            unique_keys: Arc::new(unique_keys),
            entries: FastMap::default(),
            call: 1,
            batch_start: 1,
            call_keys: Vec::new(),
            calls: Vec::new(),
            dirty: 0,
            written_bytes: 0,
            reads: 0,
            read_bytes: 0,
            position: 0,
            violation: None,
            store_failure: None,
            blocked: Duration::ZERO,
            logs: None,
            watch: None,
            absent: Absent::Unasked,
            written: HashSet::default(),
            hasher: foldhash::fast::RandomState::default(),
            kept: None,
        }
    }

    fn written_hash(&self, collection: &str, id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((collection, id))
    }

    /// Whether a document missing from the cache certainly does not exist, without reading it.
    fn known_absent(&mut self, collection: &str, id: &str) -> bool {
        if self.absent == Absent::Unasked {
            let asked = Instant::now();
            // A reader that cannot tell, or fails to, costs reads, never a wrong answer.
            let empty = self.reader.is_empty().unwrap_or(false);
            self.blocked += asked.elapsed();
            self.absent = match empty {
                true => Absent::Unwritten,
                false => self.forget_writes(),
            };
        }
        self.absent == Absent::Unwritten
            && !self.written.contains(&self.written_hash(collection, id))
    }

    fn forget_writes(&mut self) -> Absent {
        self.written = HashSet::default();
        Absent::Unknown
    }

    /// Time spent waiting on the store for reads so far (it only grows): subtracted from a
    /// guest's time so that a slow store never makes a guest miss its deadline.
    pub fn blocked(&self) -> Duration {
        self.blocked
    }

    /// Position of the event being handled, as far as the host knows (the first of the batch
    /// until the guest says otherwise); used to tag logs and errors.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Set the position logs and errors are tagged with.
    pub fn set_position(&mut self, position: Position) {
        self.position = position;
    }

    /// The first contract violation of the batch, with the position it happened at.
    pub fn violation(&self) -> Option<&(Position, CollectionFailure)> {
        self.violation.as_ref()
    }

    /// The first store failure of the batch: the batch failed because of the host, not the
    /// projection, and is worth retrying.
    pub fn store_failure(&self) -> Option<&str> {
        self.store_failure.as_deref()
    }

    fn refuse(&mut self, failure: CollectionFailure) -> CollectionFailure {
        if failure.is_violation() && self.violation.is_none() {
            self.violation = Some((self.position, failure.clone()));
        }
        failure
    }

    /// Refuse a call on an undeclared collection or with a bad id (a violation of the contract,
    /// which fails the batch whatever the guest does with the error).
    pub(crate) fn check(&mut self, collection: &str, id: &str) -> Result<(), CollectionFailure> {
        if !self.collections.contains(collection) {
            let shown: String = collection.chars().take(64).collect();
            return Err(self.refuse(CollectionFailure::UnknownCollection(shown)));
        }
        document::check_id(id).map_err(|e| self.refuse(CollectionFailure::InvalidId(e.to_string())))
    }

    fn load(
        &mut self,
        collection: &str,
        id: &str,
    ) -> Result<Option<Arc<Document>>, CollectionFailure> {
        if let Some(entry) = self.entries.get(collection).and_then(|c| c.get(id)) {
            return Ok(entry.document.clone());
        }
        if self.reads >= MAX_READS_PER_BATCH {
            return Err(self.refuse(CollectionFailure::LimitExceeded(format!(
                "a batch may read at most {MAX_READS_PER_BATCH} documents"
            ))));
        }
        let read = match self.known_absent(collection, id) {
            true => Ok(None),
            false => {
                let asked = Instant::now();
                let read = self.reader.get(collection, id);
                self.blocked += asked.elapsed();
                read
            }
        };
        let document = match read {
            Ok(document) => document.map(Arc::new),
            Err(error) => {
                // The host's failure, whatever the guest makes of the error it is given: the
                // batch is retried as a host failure, never charged to the event.
                let message = format!("reading {collection}/{id}: {error}");
                self.store_failure.get_or_insert_with(|| message.clone());
                return Err(CollectionFailure::Store(message));
            }
        };
        let size = document.as_deref().map_or(0, document::encoded_len);
        self.entries
            .entry(collection.to_owned())
            .or_default()
            .insert(
                id.to_owned(),
                Entry {
                    document: document.clone(),
                    dirty: false,
                    size: Some(size),
                    noted: 0,
                },
            );
        self.reads += 1;
        self.read_bytes += size;
        if self.read_bytes > MAX_READ_BYTES_PER_BATCH {
            return Err(self.refuse(CollectionFailure::LimitExceeded(format!(
                "a batch may read at most {MAX_READ_BYTES_PER_BATCH} bytes of documents"
            ))));
        }
        Ok(document)
    }

    /// A unique index compares one value per document, the same way on every store: a
    /// document whose unique key is not one string, number or boolean (or missing, or null) is
    /// refused (see [`document::unique_key_problem`]).
    fn check_unique_keys(
        &mut self,
        collection: &str,
        document: &Document,
    ) -> Result<(), CollectionFailure> {
        let Some(indexes) = self.unique_keys.get(collection) else {
            return Ok(());
        };
        let found = indexes.iter().find_map(|(index, fields)| {
            fields.iter().find_map(|field| {
                let problem = document::unique_key_problem(document, field)?;
                Some(format!(
                    "`{field}` is a key of the unique index `{index}` and {problem}; a unique key is one string, number or boolean"
                ))
            })
        });
        match found {
            Some(message) => Err(self.refuse(CollectionFailure::InvalidDocument(message))),
            None => Ok(()),
        }
    }

    fn stage(
        &mut self,
        collection: &str,
        id: &str,
        document: Option<Arc<Document>>,
        bytes: usize,
        size: usize,
    ) -> Result<(), CollectionFailure> {
        self.written_bytes += bytes;
        if self.written_bytes > MAX_BYTES_PER_BATCH {
            return Err(self.refuse(CollectionFailure::LimitExceeded(format!(
                "a batch may write at most {MAX_BYTES_PER_BATCH} bytes of documents"
            ))));
        }
        let documents = match self.entries.get_mut(collection) {
            Some(documents) => documents,
            None => self.entries.entry(collection.to_owned()).or_default(),
        };
        let entry = match documents.get_mut(id) {
            Some(entry) => entry,
            None => documents.entry(id.to_owned()).or_insert(Entry {
                document: None,
                dirty: false,
                size: None,
                noted: 0,
            }),
        };
        let newly_dirty = !entry.dirty;
        let tracked = self.absent != Absent::Unknown;
        if entry.noted != self.call {
            self.call_keys
                .push(crate::store::written_key(collection, id));
        }
        *entry = Entry {
            document,
            dirty: true,
            size: Some(size),
            noted: self.call,
        };
        if tracked {
            let hash = self.written_hash(collection, id);
            self.written.insert(hash);
            if self.written.len() > MAX_TRACKED_WRITES {
                self.absent = self.forget_writes();
            }
        }
        if newly_dirty {
            self.dirty += 1;
            if self.dirty > MAX_DOCUMENTS_PER_BATCH {
                return Err(self.refuse(CollectionFailure::LimitExceeded(format!(
                    "a batch may touch at most {MAX_DOCUMENTS_PER_BATCH} documents"
                ))));
            }
        }
        Ok(())
    }

    /// The document as JSON text, seeing the batch's earlier writes.
    pub fn get(&mut self, collection: &str, id: &str) -> Result<Option<String>, CollectionFailure> {
        self.check(collection, id)?;
        Ok(self
            .load(collection, id)?
            .map(|d| serde_json::to_string(&*d).unwrap_or_default()))
    }

    /// Insert or replace a document given as JSON text.
    pub fn put(&mut self, collection: &str, id: &str, json: &str) -> Result<(), CollectionFailure> {
        self.check(collection, id)?;
        if json.len() > MAX_DOCUMENT_BYTES {
            return Err(self.refuse(CollectionFailure::InvalidDocument(format!(
                "document has {} bytes; at most {MAX_DOCUMENT_BYTES} are allowed",
                json.len()
            ))));
        }
        let document = document::parse_document(id, json)
            .map_err(|e| self.refuse(CollectionFailure::InvalidDocument(e.to_string())))?;
        // Both stores take what MongoDB can store: no malformed `$date`, `$numberLong`...
        for (field, value) in &document {
            extjson::check_key(field)
                .and_then(|()| extjson::check_at(value, 2))
                .map_err(|e| {
                    self.refuse(CollectionFailure::InvalidDocument(format!(
                        "`{field}`: {e}"
                    )))
                })?;
        }
        self.check_unique_keys(collection, &document)?;
        let size = json.len() + id.len() + UPDATE_GROWTH_SLACK;
        self.stage(collection, id, Some(Arc::new(document)), json.len(), size)
    }

    /// Delete a document; whether it existed.
    pub fn delete(&mut self, collection: &str, id: &str) -> Result<bool, CollectionFailure> {
        self.check(collection, id)?;
        let existed = self.load(collection, id)?.is_some();
        self.stage(collection, id, None, 0, 0)?;
        Ok(existed)
    }

    /// Apply update operators given as JSON text; whether the document exists afterwards.
    pub fn update(
        &mut self,
        collection: &str,
        id: &str,
        update: &str,
        upsert: bool,
    ) -> Result<bool, CollectionFailure> {
        self.check(collection, id)?;
        if update.len() > MAX_DOCUMENT_BYTES {
            return Err(self.refuse(CollectionFailure::InvalidDocument(
                "the update is too large".into(),
            )));
        }
        let bytes = update.len();
        match update::parse_update(update) {
            Ok(update) => self.apply(collection, id, update, bytes, upsert),
            Err(error) => self.refuse_update(collection, id, error, upsert),
        }
    }

    /// Apply update operators given one by one (`update-fields`): the same as [`Self::update`]
    /// with the same operators as JSON text, without the text.
    pub fn update_fields(
        &mut self,
        collection: &str,
        id: &str,
        fields: Vec<FieldUpdate>,
        upsert: bool,
    ) -> Result<bool, CollectionFailure> {
        self.check(collection, id)?;
        let update = match update::Update::new(fields) {
            Ok(update) => update,
            Err(error) => return self.refuse_update(collection, id, error, upsert),
        };
        let bytes = update.text_bound();
        if bytes > MAX_DOCUMENT_BYTES {
            return Err(self.refuse(CollectionFailure::InvalidDocument(
                "the update is too large".into(),
            )));
        }
        self.apply(collection, id, update, bytes, upsert)
    }

    /// An update that does not check is refused, but one without upsert whose operators are at
    /// fault does nothing to a document that does not exist, as `update` always did (see
    /// [`update::UpdateError::is_in_operators`]).
    fn refuse_update(
        &mut self,
        collection: &str,
        id: &str,
        error: update::UpdateError,
        upsert: bool,
    ) -> Result<bool, CollectionFailure> {
        if !upsert && error.is_in_operators() && self.load(collection, id)?.is_none() {
            return Ok(false);
        }
        Err(CollectionFailure::InvalidUpdate(error.to_string()))
    }

    /// Apply a checked update whose text has `bytes` (or would have, as JSON).
    fn apply(
        &mut self,
        collection: &str,
        id: &str,
        update: update::Update,
        bytes: usize,
        upsert: bool,
    ) -> Result<bool, CollectionFailure> {
        let current = self.load(collection, id)?;
        let existed = current.is_some();
        let entry = self.entries.get_mut(collection).and_then(|c| c.get_mut(id));
        let before = entry
            .as_ref()
            .and_then(|e| e.size)
            .unwrap_or_else(|| current.as_deref().map_or(0, document::encoded_len));
        // An update that certainly applies changes the document where it is: the entry lets go
        // of it first, so it is copied only while a commit still holds it. Any other is applied
        // to a copy, since a failed update must leave the document as it was. (A check after an
        // update in place that refuses the document is a violation: the batch fails, and its
        // cache goes with it.)
        let in_place = match (entry, current.as_ref()) {
            (Some(entry), Some(doc)) if update::applies_in_place(doc, &update) => {
                entry.document = None;
                true
            }
            _ => false,
        };
        // A new document from an upsert is built where it is too: there is nothing to keep.
        let fresh = current.is_none() && upsert && update::applies_in_place(&Map::new(), &update);
        let outcome = match current {
            Some(mut doc) if in_place => {
                if let Err(error) = update::apply_in_place(id, Arc::make_mut(&mut doc), update) {
                    // Checked to apply, yet it failed: the document may be half-changed, so the
                    // batch fails (a violation) and its cache is dropped with it.
                    return Err(self.refuse(CollectionFailure::InvalidDocument(format!(
                        "the update of `{id}` failed where it was checked to apply: {error}"
                    ))));
                }
                Ok(Some(doc))
            }
            None if fresh => {
                // Sized for its fields, `_id` first: nothing is rehashed or moved.
                let mut doc = Map::with_capacity(update.fields().len() + 1);
                doc.insert("_id".to_owned(), Value::String(id.to_owned()));
                if let Err(error) = update::apply_in_place(id, &mut doc, update) {
                    return Err(self.refuse(CollectionFailure::InvalidDocument(format!(
                        "the update creating `{id}` failed where it was checked to apply: {error}"
                    ))));
                }
                Ok(Some(Arc::new(doc)))
            }
            current => update::apply_update(id, current.map(Arc::unwrap_or_clone), &update, upsert)
                .map(|doc| doc.map(Arc::new)),
        };
        match outcome {
            Ok(Some(doc)) => {
                // Measured only when the bound says it may be too large: documents that grow
                // through many small updates are caught without a serialisation per update.
                let mut size = before + bytes + UPDATE_GROWTH_SLACK;
                if size > MAX_DOCUMENT_BYTES {
                    size = document::encoded_len(&*doc);
                    if size > MAX_DOCUMENT_BYTES {
                        return Err(self.refuse(CollectionFailure::InvalidDocument(format!(
                            "document `{id}` would have {size} bytes after the update; at most {MAX_DOCUMENT_BYTES} are allowed"
                        ))));
                    }
                }
                self.check_unique_keys(collection, &doc)?;
                self.stage(collection, id, Some(doc), bytes, size)?;
                Ok(true)
            }
            Ok(None) => Ok(existed),
            Err(e) => Err(CollectionFailure::InvalidUpdate(e.to_string())),
        }
    }

    /// A call of the handler ended with the event at `last`: what it wrote is recorded apart
    /// from the next call's (see [`BatchWrites::segments`]).
    pub fn end_call(&mut self, last: Position) {
        let keys = std::mem::take(&mut self.call_keys);
        self.calls.push((last, keys));
        self.call += 1;
    }

    /// Whether the batch has used a quarter of any of its limits: a page handled in several
    /// calls is committed at that point, so the calls still to come keep most of the limits a
    /// batch of their own would have.
    pub fn nearly_full(&self) -> bool {
        self.dirty > MAX_DOCUMENTS_PER_BATCH / 4
            || self.written_bytes > MAX_BYTES_PER_BATCH / 4
            || self.reads > MAX_READS_PER_BATCH / 4
            || self.read_bytes > MAX_READ_BYTES_PER_BATCH / 4
    }

    /// The batch's writes, coalesced per document, for the store to commit. The documents stay
    /// cached as clean; call [`BatchContext::discard`] instead if the batch failed.
    pub fn take_writes(&mut self) -> BatchWrites {
        let mut documents = Vec::with_capacity(self.dirty);
        let (mut cached, mut cached_bytes) = (0, 0);
        for (collection, entries) in self.entries.iter_mut() {
            cached += entries.len();
            for (id, entry) in entries.iter_mut() {
                cached_bytes += entry.size.unwrap_or(0);
                if entry.dirty {
                    entry.dirty = false;
                    documents.push((collection.clone(), id.clone(), entry.document.clone()));
                }
            }
        }
        // Writes after the last ended call (none from the projector) belong to the last one.
        let mut calls = std::mem::take(&mut self.calls);
        let rest = std::mem::take(&mut self.call_keys);
        if let Some((_, keys)) = calls.last_mut() {
            keys.extend(rest);
        }
        let batch_start = self.batch_start;
        self.end_batch();
        if cached > CACHE_LIMIT || cached_bytes > CACHE_BYTES_LIMIT {
            // What this batch wrote stays: its commit may still be running while the next batch
            // is handled (see `projector::runner::InFlight`), and the store would answer for
            // these documents what they were before it.
            for entries in self.entries.values_mut() {
                entries.retain(|_, entry| entry.noted >= batch_start);
            }
        }
        BatchWrites {
            documents,
            calls,
            ..BatchWrites::default()
        }
    }

    /// Between batches, at the head: drop a cache grown by a replay (and its memory), and keep a
    /// small one, which is what following live appends reads from.
    pub fn release_cache(&mut self) {
        let cached: usize = self.entries.values().map(HashMap::len).sum();
        let bytes: usize = self
            .entries
            .values()
            .flat_map(HashMap::values)
            .map(|e| e.size.unwrap_or(0))
            .sum();
        if self.dirty == 0 && (cached > LIVE_CACHE_LIMIT || bytes > LIVE_CACHE_BYTES_LIMIT) {
            self.entries = FastMap::default();
        }
        // Live, few documents are new per batch: reading them costs less than the memory of
        // every id a replay wrote.
        self.absent = self.forget_writes();
    }

    /// Forget everything staged and cached: the batch failed or its commit did.
    pub fn discard(&mut self) {
        self.entries.clear();
        self.end_batch();
    }

    /// Keep what the handler needs for its next call of this batch (the engine: a warmed-up
    /// instance of a guest called once per event). Dropped when the batch is committed or
    /// discarded, so it never outlives the batch's calls.
    pub fn keep_instance(&mut self, kept: Box<dyn Any + Send>) {
        self.kept = Some(kept);
    }

    /// What the handler's last call of this batch kept, if any.
    pub fn take_instance(&mut self) -> Option<Box<dyn Any + Send>> {
        self.kept.take()
    }

    fn end_batch(&mut self) {
        self.kept = None;
        self.calls.clear();
        self.call_keys.clear();
        self.call += 1;
        self.batch_start = self.call;
        self.dirty = 0;
        self.written_bytes = 0;
        self.reads = 0;
        self.read_bytes = 0;
        self.violation = None;
        self.store_failure = None;
    }
}

mod watch;

use watch::Watch;
pub use watch::{GuestLog, Watched};

#[cfg(test)]
mod tests;
