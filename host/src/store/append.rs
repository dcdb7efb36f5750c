//! One append request: its validation (every store refuses the same input) and the recognition
//! of an append sent again (a client that lost the answer can retry without writing twice).

use super::{StoreError, StoreResult};
use crate::domain::extjson;
use crate::domain::{AppendResult, ExpectedVersion, NewEvent, Position, StreamVersion};

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
        validate_stream(&self.aggregate_id)?;
        if self.events.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "append to `{}` has no event",
                self.aggregate_id
            )));
        }
        for event in &self.events {
            validate_event(&self.aggregate_id, event)?;
        }
        Ok(())
    }
}

/// Check a stream's name.
pub(crate) fn validate_stream(aggregate_id: &str) -> StoreResult<()> {
    if aggregate_id.is_empty() || aggregate_id.len() > 512 {
        return Err(StoreError::InvalidInput(
            "aggregate id must have 1 to 512 bytes".into(),
        ));
    }
    Ok(())
}

/// Check one event of an append to `aggregate_id` (its stream, for the error).
pub(crate) fn validate_event(aggregate_id: &str, event: &NewEvent) -> StoreResult<()> {
    event
        .validate()
        .map_err(|e| StoreError::InvalidInput(format!("stream `{aggregate_id}`: {e}")))?;
    for (field, value) in [
        ("eventData", &event.event_data),
        ("metadata", &event.metadata),
    ] {
        // The payload is a field of the stored event: the second level.
        extjson::check_at(value, 2).map_err(|e| {
            StoreError::InvalidInput(format!(
                "stream `{aggregate_id}`: {}: {field}: {e}",
                event.event_type
            ))
        })?;
    }
    Ok(())
}

/// An event of the log found by its id, to recognise an append a client sent again.
#[derive(Debug, Clone)]
pub(crate) struct StoredId {
    pub id: String,
    pub aggregate_id: String,
    pub aggregate_type: String,
    pub event_type: String,
    pub version: StreamVersion,
    pub position: Position,
    pub timestamp_ms: i64,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl StoredId {
    /// Whether `event`, sent again in an append to `aggregate_id`, is this stored event: the
    /// same stream, types, payloads (compared as the store keeps them: `100` and
    /// `{"$numberInt": "100"}` are one value) and, when the writer gave one, time.
    fn is(&self, aggregate_id: &str, event: &NewEvent) -> bool {
        self.aggregate_id == aggregate_id
            && self.aggregate_type == event.aggregate_type
            && self.event_type == event.event_type
            && event.timestamp_ms.is_none_or(|ms| ms == self.timestamp_ms)
            && canonical(&self.data) == canonical(&event.event_data)
            && canonical(&self.metadata) == canonical(&event.metadata)
    }
}

/// A payload as a store keeps it: read through BSON, the way MongoDB stores it, and back.
fn canonical(value: &serde_json::Value) -> serde_json::Value {
    extjson::to_bson(value)
        .map(|bson| extjson::to_json(&bson))
        .unwrap_or_else(|_| value.clone())
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
                .all(|(s, e)| s.is(&self.aggregate_id, e));
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
             again must repeat the same events (types, data, metadata), in the same order, with \
             the same ids",
            first_found.id, first_found.aggregate_id, first_found.version, first_found.event_type
        )))
    }
}
