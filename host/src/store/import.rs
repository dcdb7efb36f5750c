//! An import of an existing history: events that keep their ids, stream versions and times, and
//! take the next positions in the order they come. The rules every backend follows are here;
//! a backend only reads and writes.
//!
//! An import may be run again after a crash: an event whose stream holds its version already is
//! recognised as present (the same id, or the same type when the import gave no id) and skipped,
//! so the second run stores what the first did not and duplicates nothing.

use super::append::{validate_event, validate_stream};
use super::{StoreError, StoreResult};
use crate::domain::{NewEvent, Position, StreamVersion};

/// One event of a history being imported.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedEvent {
    /// The stream.
    pub aggregate_id: String,
    /// Its version in the stream, 1-based.
    pub version: StreamVersion,
    /// The event, with its time (and its id when the source has one).
    pub event: NewEvent,
    /// Where it comes from, for errors: `line 17`, `document 65a1...`.
    pub origin: String,
}

/// A batch of an import whose every event has been checked ([`ImportedEvent::validate`]): the
/// only thing [`super::EventLog::import`] takes, so a batch is checked once, wherever it is
/// built (the importer checks it on its reading thread, beside the store's writes).
/// Each event's payload and metadata are also kept as JSON text, made there too, for the
/// embedded store, which stores that text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportBatch {
    events: Vec<ImportedEvent>,
    texts: Vec<(String, String)>,
    last: bool,
}

impl ImportBatch {
    /// Check every event; the first that fails is the error.
    pub fn new(events: Vec<ImportedEvent>) -> StoreResult<Self> {
        for event in &events {
            event.validate()?;
        }
        let texts = events
            .iter()
            .map(|e| (e.event.event_data.to_string(), e.event.metadata.to_string()))
            .collect();
        Ok(Self {
            events,
            texts,
            last: false,
        })
    }

    /// Mark the import's last batch: the store tidies up after it (the embedded store copies the
    /// import's log into the database file).
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

    /// The events, each with its payload and metadata as JSON text.
    pub(crate) fn with_texts(&self) -> impl Iterator<Item = (&ImportedEvent, &str, &str)> {
        self.events
            .iter()
            .zip(&self.texts)
            .map(|(e, (data, metadata))| (e, data.as_str(), metadata.as_str()))
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
    /// Check the event as an append would, and that it has a version and a time.
    pub fn validate(&self) -> StoreResult<()> {
        let named = |e: StoreError| match e {
            StoreError::InvalidInput(message) => {
                StoreError::InvalidInput(format!("{}: {message}", self.origin))
            }
            other => other,
        };
        if self.version == 0 {
            return Err(StoreError::InvalidInput(format!(
                "{}: stream `{}`: version must be 1 or more",
                self.origin, self.aggregate_id
            )));
        }
        if self.event.timestamp_ms.is_none() {
            return Err(StoreError::InvalidInput(format!(
                "{}: an imported event needs its time",
                self.origin
            )));
        }
        validate_stream(&self.aggregate_id).map_err(named)?;
        validate_event(&self.aggregate_id, &self.event).map_err(named)
    }

    /// Whether the stored event at this event's stream and version is this event: the same id,
    /// or, when the import gave none, the same type. Anything else is a history that differs
    /// from the store's, and nothing of the batch is stored.
    pub(crate) fn check_present(&self, stored_id: &str, stored_type: &str) -> StoreResult<()> {
        let same = match &self.event.id {
            Some(id) => id == stored_id,
            None => stored_type == self.event.event_type,
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
            self.event.id.as_deref().unwrap_or_default()
        ))
    }
}
