//! Events as appended and as recorded.
//!
//! - [`Position`]: the global, gap-free, commit-ordered number of an event (1-based; 0 means
//!   "before the first event").
//! - [`StreamVersion`]: the 1-based number of an event within its aggregate stream (stored as
//!   `version`, as in the seeds' schema).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::document::encoded_len;
use crate::domain::time::{MAX_TIMESTAMP_MS, iso8601_millis};

/// Global order of an event. 0 is the origin, before the first event.
pub type Position = u64;

/// Version of an event within its aggregate stream, 1-based. 0 means "empty stream".
pub type StreamVersion = u64;

/// The version a writer expects a stream to be at, for optimistic concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this.
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream currently at `current` (0 when it does not exist) satisfies this.
    pub fn accepts(self, current: StreamVersion) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::Exact(v) => v == current,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no_stream"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl FromStr for ExpectedVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Self::Any),
            "no_stream" | "no-stream" => Ok(Self::NoStream),
            other => other.parse::<u64>().map(Self::Exact).map_err(|_| {
                format!("expected version `{other}` is not `any`, `no_stream` or a whole number")
            }),
        }
    }
}

/// An event to append. The store assigns its position, stream version and (unless given) its
/// id and timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEvent {
    /// Event id (UUID string); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Kind of aggregate, e.g. `Payment`.
    pub aggregate_type: String,
    /// Kind of event, e.g. `PaymentProcessed`.
    pub event_type: String,
    /// Payload: a JSON object.
    #[serde(default = "empty_object")]
    pub event_data: serde_json::Value,
    /// Metadata: a JSON object.
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    /// Recording time in ms since the Unix epoch; the store's clock when absent (an import of
    /// an existing history keeps its original times).
    #[serde(default)]
    pub timestamp_ms: Option<i64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Longest `eventType` or `aggregateType`, in bytes.
pub const MAX_TYPE_BYTES: usize = 256;

/// Largest payload (data plus metadata, as JSON text) a single event may carry.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

impl NewEvent {
    /// Check the event before it is stored: names non-empty, payloads JSON objects, size bounded.
    pub fn validate(&self) -> Result<(), String> {
        check_names(&self.aggregate_type, &self.event_type)?;
        if !self.event_data.is_object() {
            return Err(format!(
                "{}: eventData is not a JSON object",
                self.event_type
            ));
        }
        if !self.metadata.is_object() {
            return Err(format!(
                "{}: metadata is not a JSON object",
                self.event_type
            ));
        }
        check_size(
            &self.event_type,
            encoded_len(&self.event_data) + encoded_len(&self.metadata),
        )?;
        check_id_and_time(&self.event_type, self.id.as_deref(), self.timestamp_ms)
    }
}

/// An event's `aggregateType` and `eventType`: not blank, not too long.
pub(crate) fn check_names(aggregate_type: &str, event_type: &str) -> Result<(), String> {
    for (field, name) in [("aggregateType", aggregate_type), ("eventType", event_type)] {
        if name.trim().is_empty() {
            return Err(format!("{field} is empty"));
        }
        if name.len() > MAX_TYPE_BYTES {
            return Err(format!(
                "{field} has {} bytes; at most {MAX_TYPE_BYTES} are allowed",
                name.len()
            ));
        }
    }
    Ok(())
}

/// The size of an event's payload and metadata, as compact JSON.
pub(crate) fn check_size(event_type: &str, bytes: usize) -> Result<(), String> {
    if bytes > MAX_EVENT_BYTES {
        return Err(format!(
            "{event_type}: eventData and metadata take {bytes} bytes as JSON; at most {MAX_EVENT_BYTES} are allowed"
        ));
    }
    Ok(())
}

/// An event's id, when given, and its time, when given.
pub(crate) fn check_id_and_time(
    event_type: &str,
    id: Option<&str>,
    timestamp_ms: Option<i64>,
) -> Result<(), String> {
    if let Some(id) = id
        && (id.is_empty() || id.len() > 128)
    {
        return Err(format!("{event_type}: event id must have 1 to 128 bytes"));
    }
    if let Some(ms) = timestamp_ms
        && !(0..=MAX_TIMESTAMP_MS).contains(&ms)
    {
        return Err(format!(
            "{event_type}: timestampMs {ms} is outside 1970..9999"
        ));
    }
    Ok(())
}

/// An event as stored, in the seeds' shape plus its global position. Data and metadata stay as
/// JSON text: the replay path hands them to guests without re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position.
    pub position: Position,
    /// Event id.
    pub id: String,
    /// Aggregate (stream) id.
    pub aggregate_id: String,
    /// Kind of aggregate.
    pub aggregate_type: String,
    /// Kind of event.
    pub event_type: String,
    /// Version within the stream.
    pub version: StreamVersion,
    /// Recording time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Payload, JSON object text.
    pub data: String,
    /// Metadata, JSON object text.
    pub metadata: String,
}

impl RecordedEvent {
    /// The event as the JSON document users see (seeds' field names).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "_id": self.id,
            "position": self.position,
            "aggregateId": self.aggregate_id,
            "aggregateType": self.aggregate_type,
            "eventType": self.event_type,
            "version": self.version,
            "timestamp": iso8601_millis(self.timestamp_ms),
            "eventData": serde_json::from_str::<serde_json::Value>(&self.data).unwrap_or(serde_json::Value::Null),
            "metadata": serde_json::from_str::<serde_json::Value>(&self.metadata).unwrap_or(serde_json::Value::Null),
        })
    }
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendResult {
    /// Position of the first appended event.
    pub first_position: Position,
    /// Position of the last appended event.
    pub last_position: Position,
    /// Version of the stream after the append.
    pub version: StreamVersion,
}

/// Which events a reader wants. Empty lists match everything; an event must match both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Event types to keep.
    pub event_types: Vec<String>,
    /// Aggregate types to keep.
    pub aggregate_types: Vec<String>,
}

impl EventFilter {
    /// Whether the event passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && (self.aggregate_types.is_empty()
                || self.aggregate_types.contains(&event.aggregate_type))
    }
}

#[cfg(test)]
mod tests {
    use super::ExpectedVersion;

    #[test]
    fn parses_expected_versions() {
        assert_eq!("any".parse(), Ok(ExpectedVersion::Any));
        assert_eq!("no_stream".parse(), Ok(ExpectedVersion::NoStream));
        assert_eq!("7".parse(), Ok(ExpectedVersion::Exact(7)));
        assert!("-1".parse::<ExpectedVersion>().is_err());
        assert!(ExpectedVersion::NoStream.accepts(0));
        assert!(!ExpectedVersion::Exact(2).accepts(3));
    }
}
