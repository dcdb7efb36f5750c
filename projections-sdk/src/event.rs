//! A recorded event as a projection sees it, with typed decoding of its payload.

use serde::de::DeserializeOwned;

use crate::wit::refold::projection::types as wit;
use crate::{Error, Result};

/// One recorded event, in position order within a batch.
#[derive(Debug, Clone)]
pub struct Event {
    raw: wit::Event,
}

impl Event {
    pub(crate) fn from_wit(raw: wit::Event) -> Self {
        Self { raw }
    }

    /// Global position: gap-free, in commit order.
    pub fn position(&self) -> u64 {
        self.raw.position
    }

    /// Unique id of the event.
    pub fn id(&self) -> &str {
        &self.raw.id
    }

    /// The aggregate (stream) this event belongs to.
    pub fn aggregate_id(&self) -> &str {
        &self.raw.aggregate_id
    }

    /// The kind of aggregate.
    pub fn aggregate_type(&self) -> &str {
        &self.raw.aggregate_type
    }

    /// The kind of event.
    pub fn event_type(&self) -> &str {
        &self.raw.event_type
    }

    /// Stream version: 1-based position within the aggregate stream.
    pub fn version(&self) -> u64 {
        self.raw.version
    }

    /// When the event was recorded, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.raw.timestamp_ms
    }

    /// The timestamp as an Extended JSON date (`{"$date": "2024-12-19T10:00:00.000Z"}`), which
    /// the host stores as a date so range queries on it work.
    pub fn timestamp(&self) -> serde_json::Value {
        serde_json::json!({ "$date": crate::iso8601_millis(self.raw.timestamp_ms) })
    }

    /// The payload as raw JSON text.
    pub fn data_json(&self) -> &str {
        &self.raw.data
    }

    /// The metadata as raw JSON text.
    pub fn metadata_json(&self) -> &str {
        &self.raw.metadata
    }

    /// Decode the payload. A payload of the wrong shape is an [`ErrorKind::InvalidEvent`](crate::ErrorKind::InvalidEvent).
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        decode(&self.raw.data, "data", &self.raw.event_type)
    }

    /// Decode the metadata. Metadata of the wrong shape is an [`ErrorKind::InvalidEvent`](crate::ErrorKind::InvalidEvent).
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<T> {
        decode(&self.raw.metadata, "metadata", &self.raw.event_type)
    }
}

fn decode<T: DeserializeOwned>(json: &str, part: &str, event_type: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|e| Error::invalid_event(format!("{event_type}: {part} does not decode: {e}")))
}
