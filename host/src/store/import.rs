//! An import of an existing history: events that keep their ids, stream versions and times, and
//! take the next positions in the order they come. The rules every backend follows are here;
//! a backend only reads and writes.
//!
//! An import may be run again after a crash: an event whose stream holds its version already is
//! recognised as present (the same id, or the same type when the import gave no id) and skipped,
//! so the second run stores what the first did not and duplicates nothing.

use super::append::validate_stream;
use super::{StoreError, StoreResult};
use crate::domain::event::{check_id_and_time, check_names, check_size};
use crate::domain::json_object::JsonObject;
use crate::domain::{Position, StreamVersion};

/// The maps an import keys by stream: foldhash, several times quicker than the standard SipHash
/// on short keys (SipHash was 4 % of an import).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One event of a history being imported. Its payload and metadata are compact JSON text,
/// checked when it was read ([`JsonObject`]): the embedded store keeps that text as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedEvent {
    /// The stream.
    pub aggregate_id: String,
    /// Its version in the stream, 1-based.
    pub version: StreamVersion,
    /// Its id, when the source has one (one is made otherwise).
    pub id: Option<String>,
    /// Kind of aggregate.
    pub aggregate_type: String,
    /// Kind of event.
    pub event_type: String,
    /// Its time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The payload.
    pub event_data: JsonObject,
    /// The metadata.
    pub metadata: JsonObject,
    /// Where it comes from, for errors: `line 17`, `document 65a1...`.
    pub origin: String,
}

/// A batch of an import whose every event has been checked ([`ImportedEvent::validate`]): the
/// only thing [`super::EventLog::import`] takes, so a batch is checked once, wherever it is
/// built (the importer checks it on its reading thread, beside the store's writes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportBatch {
    events: Vec<ImportedEvent>,
    last: bool,
}

impl ImportBatch {
    /// Check every event; the first that fails is the error.
    pub fn new(events: Vec<ImportedEvent>) -> StoreResult<Self> {
        for event in &events {
            event.validate()?;
        }
        Ok(Self {
            events,
            last: false,
        })
    }

    /// Mark the import's last batch: the store tidies up after it (the embedded store flushes the
    /// import's log to the disk and copies it into the database file). An empty last batch does
    /// that for the batches stored before an error.
    pub fn last(mut self) -> Self {
        self.last = true;
        self
    }

    /// Whether this is the import's last batch.
    pub fn is_last(&self) -> bool {
        self.last
    }

    /// The events, in order.
    pub fn events(&self) -> &[ImportedEvent] {
        &self.events
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What a batch of an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    /// Events stored by this batch.
    pub stored: u64,
    /// Events found stored already (an import run again).
    pub present: u64,
    /// The position of the last event stored, 0 when none was.
    pub last_position: Position,
}

impl Imported {
    /// Add the outcome of another batch.
    pub fn add(&mut self, other: Imported) {
        self.stored += other.stored;
        self.present += other.present;
        self.last_position = self.last_position.max(other.last_position);
    }
}

impl ImportedEvent {
    /// Check the event as an append would (its payloads were checked as they were read), and
    /// that it has a version.
    pub fn validate(&self) -> StoreResult<()> {
        let invalid =
            |message: String| StoreError::InvalidInput(format!("{}: {message}", self.origin));
        if self.version == 0 {
            return Err(invalid(format!(
                "stream `{}`: version must be 1 or more",
                self.aggregate_id
            )));
        }
        validate_stream(&self.aggregate_id).map_err(|e| match e {
            StoreError::InvalidInput(message) => invalid(message),
            other => other,
        })?;
        check_names(&self.aggregate_type, &self.event_type)
            .and_then(|()| {
                check_size(
                    &self.event_type,
                    self.event_data.len() + self.metadata.len(),
                )
            })
            .and_then(|()| {
                check_id_and_time(
                    &self.event_type,
                    self.id.as_deref(),
                    Some(self.timestamp_ms),
                )
            })
            .map_err(|e| invalid(format!("stream `{}`: {e}", self.aggregate_id)))
    }

    /// Whether the stored event at this event's stream and version is this event: the same id,
    /// or, when the import gave none, the same type. Anything else is a history that differs
    /// from the store's, and nothing of the batch is stored.
    pub(crate) fn check_present(&self, stored_id: &str, stored_type: &str) -> StoreResult<()> {
        let same = match &self.id {
            Some(id) => id == stored_id,
            None => stored_type == self.event_type,
        };
        if same {
            return Ok(());
        }
        Err(StoreError::InvalidInput(format!(
            "{}: stream `{}` holds version {} already, as another event (id `{stored_id}`, type \
             `{stored_type}`); the store's history differs from the one imported",
            self.origin, self.aggregate_id, self.version
        )))
    }

    /// The error for an event whose version does not follow its stream's last one in the store.
    pub(crate) fn gap(&self, current: StreamVersion) -> StoreError {
        StoreError::InvalidInput(format!(
            "{}: stream `{}` is at version {current} in the store, so version {} cannot follow \
             it: a stream's versions must be consecutive from 1",
            self.origin, self.aggregate_id, self.version
        ))
    }

    /// The error for an event id the store holds already, as an event of another stream or
    /// version.
    pub(crate) fn duplicate_id(&self) -> StoreError {
        StoreError::InvalidInput(format!(
            "{}: event id `{}` exists already, as another event",
            self.origin,
            self.id.as_deref().unwrap_or_default()
        ))
    }
}
