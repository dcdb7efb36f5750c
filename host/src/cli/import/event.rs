//! One event of an import's source, read and checked: a JSON Lines line the quick way (straight
//! from its text) or any line or document the slow way (through a `serde_json::Value`), then each
//! stream's versions put in order.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::Value;

use crate::domain::json_object::JsonObject;
use crate::domain::{StreamVersion, extjson};
use crate::store::{FastMap, ImportedEvent};

/// Most events held back, across all streams, waiting for an earlier version of their stream.
const MAX_HELD: usize = 100_000;

/// An event as read, before its stream's order is checked: the version the source gives, if
/// any, and the event (whose `version` is set once its stream's order is known).
pub(in crate::cli) struct Read_ {
    version: Option<StreamVersion>,
    event: ImportedEvent,
}

/// The text of a number in Extended JSON or plain JSON, as a whole number.
fn whole_number(value: &Value) -> Option<i64> {
    match extjson::to_bson(value).ok()? {
        bson::Bson::Int32(v) => Some(i64::from(v)),
        bson::Bson::Int64(v) => Some(v),
        bson::Bson::Double(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(v as i64),
        _ => None,
    }
}

/// A time given as ISO 8601 text, `{"$date": ...}` or milliseconds since the Unix epoch.
fn time_of(value: &Value) -> Option<i64> {
    match value {
        // The common `...Z` form by a quick parser, any other offset by the full one.
        Value::String(text) => humantime::parse_rfc3339(text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .or_else(|| {
                bson::DateTime::parse_rfc3339_str(text)
                    .ok()
                    .map(|d| d.timestamp_millis())
            }),
        Value::Object(_) => match extjson::to_bson(value).ok()? {
            bson::Bson::DateTime(date) => Some(date.timestamp_millis()),
            _ => None,
        },
        _ => whole_number(value),
    }
}

/// A line in the common form, read without building a [`Value`]: see [`quick_event`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickLine {
    #[serde(rename = "aggregateId")]
    aggregate_id: String,
    #[serde(rename = "aggregateType")]
    aggregate_type: String,
    #[serde(rename = "eventType")]
    event_type: String,
    #[serde(rename = "eventData", default, deserialize_with = "some_object")]
    event_data: Option<JsonObject>,
    #[serde(default, deserialize_with = "some_object")]
    metadata: Option<JsonObject>,
    #[serde(default)]
    version: Option<StreamVersion>,
    #[serde(default, deserialize_with = "present")]
    timestamp: Option<String>,
    #[serde(rename = "timestampMs", default, deserialize_with = "present")]
    timestamp_ms: Option<i64>,
    #[serde(rename = "_id", default, deserialize_with = "present")]
    underscore_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    position: Option<serde::de::IgnoredAny>,
}

fn some_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<JsonObject>, D::Error> {
    JsonObject::read(d).map(Some)
}

/// A field given with a value: `null` is left to the slow way, which says what it means.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A line read the quick way, straight from its text: the common form (string ids, a whole
/// version, an ISO `...Z` time or milliseconds, payloads that need no closer look). `None` for
/// anything else, which [`event_of`] reads, with the error that names what is wrong.
pub(super) fn quick_event(line: &str, origin: &str) -> Option<Read_> {
    let quick: QuickLine = serde_json::from_str(line).ok()?;
    let timestamp_ms = match (&quick.timestamp, quick.timestamp_ms) {
        (Some(text), None) => humantime::parse_rfc3339(text)
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())?,
        (None, Some(ms)) => ms,
        _ => return None,
    };
    let id = match (quick.underscore_id, quick.id) {
        (Some(id), None) | (None, Some(id)) => Some(id),
        (None, None) => None,
        (Some(_), Some(_)) => return None,
    };
    if quick
        .version
        .is_some_and(|v| v == 0 || i64::try_from(v).is_err())
    {
        return None;
    }
    Some(Read_ {
        version: quick.version,
        event: ImportedEvent {
            aggregate_id: quick.aggregate_id,
            version: 0,
            id,
            aggregate_type: quick.aggregate_type,
            event_type: quick.event_type,
            timestamp_ms,
            event_data: quick.event_data.unwrap_or_else(JsonObject::empty),
            metadata: quick.metadata.unwrap_or_else(JsonObject::empty),
            origin: origin.to_owned(),
        },
    })
}

/// One event of the source, in the seeds' shape (`aggregateId`, `aggregateType`, `eventType`,
/// `eventData`, `metadata`, `version`, `timestamp`; `_id` or `id`), or the shape
/// `refold append --file` reads with an `aggregateId` (`timestampMs`).
pub(in crate::cli) fn event_of(value: Value, origin: String) -> anyhow::Result<Read_> {
    read_event(value, origin, false)
}

/// [`event_of`], keeping the payloads as parsed when `keep` (for MongoDB: see [`JsonObject`]).
pub(super) fn read_event(value: Value, origin: String, keep: bool) -> anyhow::Result<Read_> {
    let Value::Object(mut fields) = value else {
        anyhow::bail!("{origin}: an event is a JSON object");
    };
    let mut take = |name: &str| fields.remove(name);
    let text = |value: Option<Value>, name: &str| -> anyhow::Result<String> {
        match value {
            Some(Value::String(text)) => Ok(text),
            Some(_) => anyhow::bail!("{origin}: `{name}` must be a string"),
            None => anyhow::bail!("{origin}: `{name}` is missing"),
        }
    };
    let aggregate_id = text(take("aggregateId"), "aggregateId")?;
    let aggregate_type = text(take("aggregateType"), "aggregateType")?;
    let event_type = text(take("eventType"), "eventType")?;
    let object = |value: Option<Value>, name: &str| -> anyhow::Result<JsonObject> {
        match value {
            None | Some(Value::Null) => Ok(JsonObject::empty()),
            Some(object @ Value::Object(_)) => if keep {
                JsonObject::keeping(object)
            } else {
                JsonObject::from_value(&object)
            }
            .map_err(|e| {
                anyhow::anyhow!("{origin}: stream `{aggregate_id}`: {event_type}: {name}: {e}")
            }),
            Some(_) => anyhow::bail!("{origin}: `{name}` must be an object"),
        }
    };
    let event_data = object(take("eventData"), "eventData")?;
    let metadata = object(take("metadata"), "metadata")?;
    let version = match take("version") {
        None | Some(Value::Null) => None,
        Some(value) => match whole_number(&value) {
            Some(v) if v >= 1 => Some(v as StreamVersion),
            _ => anyhow::bail!("{origin}: `version` must be a whole number, 1 or more"),
        },
    };
    let timestamp_ms = match (take("timestamp"), take("timestampMs")) {
        (Some(_), Some(_)) => anyhow::bail!("{origin}: give `timestamp` or `timestampMs`, not both"),
        (Some(value), None) => time_of(&value).with_context(|| {
            format!("{origin}: `timestamp` must be ISO 8601 text (`2024-12-19T10:00:00Z`) or {{\"$date\": ...}}")
        })?,
        (None, Some(value)) => whole_number(&value).with_context(|| {
            format!("{origin}: `timestampMs` must be milliseconds since the Unix epoch")
        })?,
        (None, None) => anyhow::bail!("{origin}: the event's time is missing (`timestamp` or `timestampMs`)"),
    };
    let id = match (take("_id"), take("id")) {
        (Some(_), Some(_)) => anyhow::bail!("{origin}: give `_id` or `id`, not both"),
        (Some(Value::String(id)), None) | (None, Some(Value::String(id))) => Some(id),
        (Some(Value::Object(oid)), None) if oid.len() == 1 => match oid.get("$oid") {
            Some(Value::String(hex)) => Some(hex.clone()),
            _ => anyhow::bail!("{origin}: `_id` must be a string or an ObjectId"),
        },
        (None, None) => None,
        _ => anyhow::bail!("{origin}: the event id must be a string or an ObjectId"),
    };
    // A position in the source says nothing here: the store gives the next ones, in order.
    take("position");
    if let Some(unknown) = fields.keys().next() {
        anyhow::bail!("{origin}: unknown field `{unknown}`");
    }
    Ok(Read_ {
        version,
        event: ImportedEvent {
            aggregate_id,
            version: 0,
            id,
            aggregate_type,
            event_type,
            timestamp_ms,
            event_data,
            metadata,
            origin,
        },
    })
}

/// Each stream's versions, checked consecutive from 1 as the source is read. An event that comes
/// before an earlier version of its stream (a source sorted by time, with clocks that differed)
/// is held until that version comes, then released in version order.
#[derive(Default)]
pub(in crate::cli) struct StreamOrder {
    next: FastMap<String, StreamVersion>,
    held: FastMap<String, BTreeMap<StreamVersion, Read_>>,
    held_count: usize,
    pub(super) streams: u64,
}

impl StreamOrder {
    /// The events ready for the store after `read`, in order.
    pub(in crate::cli) fn push(
        &mut self,
        read: Read_,
        ready: &mut Vec<ImportedEvent>,
    ) -> anyhow::Result<()> {
        let next = match self.next.get_mut(&read.event.aggregate_id) {
            Some(next) => next,
            None => {
                self.streams += 1;
                self.next
                    .entry(read.event.aggregate_id.clone())
                    .or_insert(1)
            }
        };
        let version = read.version.unwrap_or(*next);
        if version < *next {
            anyhow::bail!(
                "{}: stream `{}` has version {version} twice",
                read.event.origin,
                read.event.aggregate_id
            );
        }
        if version > *next {
            let held = self
                .held
                .entry(read.event.aggregate_id.clone())
                .or_default();
            if let Some(first) = held.get(&version) {
                anyhow::bail!(
                    "{}: stream `{}` has version {version} twice (also {})",
                    read.event.origin,
                    read.event.aggregate_id,
                    first.event.origin
                );
            }
            anyhow::ensure!(
                self.held_count < MAX_HELD,
                "{}: more than {MAX_HELD} events wait for an earlier version of their stream; \
                 the first is stream `{}` version {version}, which waits for version {}",
                read.event.origin,
                read.event.aggregate_id,
                *next
            );
            held.insert(version, read);
            self.held_count += 1;
            return Ok(());
        }
        *next += 1;
        let stream = read.event.aggregate_id.clone();
        ready.push(imported(read, version));
        // Release what waited for this version.
        if let Some(held) = self.held.get_mut(&stream) {
            let next = self.next.get_mut(&stream).expect("stream seen");
            while let Some(read) = held.remove(next) {
                self.held_count -= 1;
                ready.push(imported(read, *next));
                *next += 1;
            }
            if held.is_empty() {
                self.held.remove(&stream);
            }
        }
        Ok(())
    }

    /// At the end of the source: an error naming the first event that still waits.
    pub(in crate::cli) fn finish(&self) -> anyhow::Result<()> {
        let waiting = self
            .held
            .iter()
            .filter_map(|(stream, held)| held.iter().next().map(|(v, read)| (stream, *v, read)))
            .min_by(|a, b| a.2.event.origin.cmp(&b.2.event.origin));
        if let Some((stream, version, read)) = waiting {
            let missing = self.next.get(stream).copied().unwrap_or(1);
            anyhow::bail!(
                "{}: stream `{stream}` version {version} waits for version {missing}, which is \
                 missing: a stream's versions must be consecutive from 1",
                read.event.origin
            );
        }
        Ok(())
    }
}

fn imported(read: Read_, version: StreamVersion) -> ImportedEvent {
    ImportedEvent {
        version,
        ..read.event
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(stream: &str, version: Option<u64>, line: u64) -> Read_ {
        event_of(
            json!({
                "aggregateId": stream,
                "aggregateType": "Payment",
                "eventType": "PaymentProcessed",
                "version": version,
                "timestampMs": 1_700_000_000_000i64,
            }),
            format!("line {line}"),
        )
        .expect("a well-formed event")
    }

    #[test]
    fn the_seeds_shape_reads_with_its_id_time_and_version() {
        let event = event_of(
            json!({
                "_id": { "$oid": "65a1b2c3d4e5f60718293a4b" },
                "aggregateId": "payment-123",
                "aggregateType": "Payment",
                "eventType": "PaymentProcessed",
                "eventData": { "amount": 100.0, "currency": "EUR" },
                "version": { "$numberLong": "1" },
                "timestamp": "2024-12-19T10:00:00Z",
                "metadata": { "userId": "user-456" },
            }),
            "line 1".into(),
        )
        .expect("seed shape");
        assert_eq!(event.event.id.as_deref(), Some("65a1b2c3d4e5f60718293a4b"));
        assert_eq!(event.version, Some(1));
        assert_eq!(event.event.timestamp_ms, 1_734_602_400_000);
        for (text, ms) in [
            ("2024-12-19T10:00:00.123Z", 1_734_602_400_123),
            ("2024-12-19T12:00:00.123+02:00", 1_734_602_400_123),
            ("2024-12-19T10:00:00.123456Z", 1_734_602_400_123),
        ] {
            assert_eq!(time_of(&json!(text)), Some(ms), "{text}");
        }
        assert_eq!(time_of(&json!("yesterday")), None);
        let unknown = event_of(
            json!({ "aggregateId": "a", "aggregateType": "A", "eventType": "E", "timestampMs": 1, "amount": 3 }),
            "line 9".into(),
        )
        .err()
        .expect("unknown field");
        assert_eq!(unknown.to_string(), "line 9: unknown field `amount`");
        let timeless = event_of(
            json!({ "aggregateId": "a", "aggregateType": "A", "eventType": "E" }),
            "line 4".into(),
        )
        .err()
        .expect("no time");
        assert!(
            timeless
                .to_string()
                .starts_with("line 4: the event's time is missing")
        );
    }

    #[test]
    fn the_quick_way_reads_a_line_as_the_slow_way_does_or_leaves_it_to_it() {
        let slow = |line: &str| {
            let value = serde_json::from_str(line).expect("JSON");
            event_of(value, "line 1".into()).expect("an event")
        };
        for line in [
            r#"{"_id": "e-1", "aggregateId": "payment-1", "aggregateType": "Payment", "eventType": "PaymentProcessed", "eventData": {"amount": 100.5, "currency": "EUR", "tags": ["a", "b"]}, "version": 3, "timestamp": "2024-12-19T10:00:00.123Z", "metadata": {"userId": "u\u00e9"}}"#,
            r#"{"id": "e-2", "aggregateId": "payment-1", "aggregateType": "Payment", "eventType": "PaymentFailed", "timestampMs": 1734602400000, "position": 17}"#,
            r#"{"aggregateId": "payment-1", "aggregateType": "Payment", "eventType": "PaymentFailed", "timestampMs": 1, "eventData": null, "metadata": {}}"#,
        ] {
            let quick = quick_event(line, "line 1").expect("the quick way");
            let slow = slow(line);
            assert_eq!(
                (quick.version, &quick.event),
                (slow.version, &slow.event),
                "{line}"
            );
        }
        for line in [
            // An ObjectId, an Extended JSON version, a time with an offset, a date in the
            // payload, a field given twice: read the slow way, to the same events.
            r#"{"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "version": {"$numberInt": "2"}, "timestampMs": 1}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestamp": "2024-12-19T12:00:00+02:00"}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "eventData": {"at": {"$date": "2024-12-19T10:00:00Z"}}}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "eventData": {"a": 1, "a": 2}}"#,
        ] {
            assert!(quick_event(line, "line 1").is_none(), "{line}");
            slow(line);
        }
        // A field given as null, and a version past the whole numbers the store keeps: left to
        // the slow way, which refuses them.
        for line in [
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestamp": null, "timestampMs": 1}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "_id": null, "id": "x"}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "_id": null}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "version": 9223372036854775808}"#,
        ] {
            assert!(quick_event(line, "line 1").is_none(), "{line}");
            let value = serde_json::from_str(line).expect("JSON");
            assert!(event_of(value, "line 1".into()).is_err(), "{line}");
        }
    }

    #[test]
    fn versions_come_out_consecutive_or_the_line_that_breaks_them_is_named() {
        let mut order = StreamOrder::default();
        let mut ready = Vec::new();
        // Version 2 before version 1 (time order with clocks that differed): held, then released.
        order.push(read("a", Some(2), 1), &mut ready).expect("held");
        assert!(ready.is_empty());
        order
            .push(read("a", Some(1), 2), &mut ready)
            .expect("released");
        order
            .push(read("b", None, 3), &mut ready)
            .expect("numbered");
        let got: Vec<(String, u64)> = ready
            .iter()
            .map(|e| (e.aggregate_id.clone(), e.version))
            .collect();
        assert_eq!(got, [("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]);
        order.finish().expect("nothing waits");

        let twice = order
            .push(read("a", Some(2), 4), &mut ready)
            .expect_err("twice");
        assert_eq!(twice.to_string(), "line 4: stream `a` has version 2 twice");
        order.push(read("b", Some(3), 5), &mut ready).expect("held");
        let gap = order.finish().expect_err("a gap");
        assert!(
            gap.to_string()
                .starts_with("line 5: stream `b` version 3 waits for version 2, which is missing"),
            "{gap}"
        );
    }
}
