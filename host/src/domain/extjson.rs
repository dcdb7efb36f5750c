//! JSON (relaxed Extended JSON) to BSON and back, so documents keep their types in MongoDB:
//! `{"$date": "..."}` becomes a BSON date (the seeds' range queries on dates work), integers stay
//! 32- or 64-bit integers, `{"$numberDecimal": "..."}` a decimal.
//!
//! The way back formats dates exactly as guests do (`YYYY-MM-DDTHH:MM:SS.mmmZ`), so a document
//! read back from MongoDB is the JSON that was written, and both stores give identical read
//! models.

use std::str::FromStr;

use bson::{Bson, DateTime, Decimal128, Document, oid::ObjectId};
use serde_json::{Map, Number, Value};

use crate::domain::time::{MAX_TIMESTAMP_MS, iso8601_millis};

/// Why a JSON value cannot become BSON.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(String);

impl ConvertError {
    pub(crate) fn new(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// A JSON object to a BSON document.
pub fn to_document(map: &Map<String, Value>) -> Result<Document, ConvertError> {
    let mut doc = Document::new();
    for (key, value) in map {
        check_key(key)?;
        doc.insert(key.clone(), to_bson(value)?);
    }
    Ok(doc)
}

/// A JSON value to BSON, reading the relaxed Extended JSON forms of dates, 64-bit integers,
/// decimals and object ids.
pub fn to_bson(value: &Value) -> Result<Bson, ConvertError> {
    Ok(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => number(n),
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect::<Result<_, _>>()?),
        Value::Object(map) => match extended(map)? {
            Some(special) => special,
            None => Bson::Document(to_document(map)?),
        },
    })
}

/// Most levels of documents and arrays in a stored document, the document itself counted as
/// the first. mongod refuses to store deeper nesting (its limit for user documents is 100);
/// serde_json alone would let 128 through, which the embedded store would keep and MongoDB
/// refuse.
pub const MAX_NESTING: usize = 100;

/// Check that a JSON value found at `level` of a stored document (the document's own fields
/// are at level 2) is one every store keeps: each Extended JSON wrapper well-formed
/// (`{"$date": "..."}` with a date in it...), no NUL in a field name (BSON cannot hold one),
/// and no deeper than [`MAX_NESTING`] levels in all. Checked without building BSON, so the
/// embedded store refuses what MongoDB would.
pub fn check_at(value: &Value, level: usize) -> Result<(), ConvertError> {
    match value {
        Value::Array(_) | Value::Object(_) if level > MAX_NESTING => Err(ConvertError(format!(
            "nests deeper than {MAX_NESTING} levels of documents and arrays"
        ))),
        Value::Array(items) => items.iter().try_for_each(|v| check_at(v, level + 1)),
        Value::Object(map) => match extended(map)? {
            Some(_) => Ok(()),
            None => map.iter().try_for_each(|(key, v)| {
                check_key(key)?;
                check_at(v, level + 1)
            }),
        },
        _ => Ok(()),
    }
}

/// [`check_at`] for a value on its own (level 1).
pub fn check(value: &Value) -> Result<(), ConvertError> {
    check_at(value, 1)
}

/// A field name BSON can hold: no NUL.
pub fn check_key(key: &str) -> Result<(), ConvertError> {
    if key.contains('\0') {
        let shown: String = key
            .chars()
            .take(64)
            .collect::<String>()
            .replace('\0', "\\0");
        return Err(ConvertError(format!(
            "field name `{shown}` contains a NUL character"
        )));
    }
    Ok(())
}

fn number(n: &Number) -> Bson {
    if let Some(i) = n.as_i64() {
        return match i32::try_from(i) {
            Ok(small) => Bson::Int32(small),
            Err(_) => Bson::Int64(i),
        };
    }
    // Integers above i64::MAX have no BSON integer type; they become doubles, as in mongosh.
    Bson::Double(n.as_f64().unwrap_or(f64::NAN))
}

/// A date, ms since the Unix epoch, as relaxed Extended JSON: `{"$date": "<ISO 8601>"}` for
/// 1970 to 9999, the canonical `{"$date": {"$numberLong": "<ms>"}}` for other dates.
pub fn date_value(ms: i64) -> Value {
    match ms {
        0..=MAX_TIMESTAMP_MS => serde_json::json!({ "$date": iso8601_millis(ms) }),
        ms => serde_json::json!({ "$date": { "$numberLong": ms.to_string() } }),
    }
}

/// The Extended JSON wrappers Refold understands; anything else stays a plain document.
fn extended(map: &Map<String, Value>) -> Result<Option<Bson>, ConvertError> {
    if map.len() != 1 {
        return Ok(None);
    }
    let Some((key, value)) = map.iter().next() else {
        return Ok(None);
    };
    let bad = |what: &str| ConvertError(format!("invalid {key} value {value}: {what}"));
    Ok(Some(match (key.as_str(), value) {
        ("$date", Value::String(text)) => {
            Bson::DateTime(DateTime::parse_rfc3339_str(text).map_err(|e| bad(&e.to_string()))?)
        }
        ("$date", Value::Number(ms)) => Bson::DateTime(DateTime::from_millis(
            ms.as_i64().ok_or_else(|| bad("not an integer"))?,
        )),
        ("$date", Value::Object(inner)) => match inner.get("$numberLong") {
            Some(Value::String(ms)) => Bson::DateTime(DateTime::from_millis(
                ms.parse().map_err(|_| bad("not an integer"))?,
            )),
            _ => return Err(bad("expected {\"$numberLong\": \"...\"}")),
        },
        ("$numberLong", Value::String(text)) => {
            Bson::Int64(text.parse().map_err(|_| bad("not a 64-bit integer"))?)
        }
        ("$numberInt", Value::String(text)) => {
            Bson::Int32(text.parse().map_err(|_| bad("not a 32-bit integer"))?)
        }
        ("$numberDouble", Value::String(text)) => {
            Bson::Double(text.parse().map_err(|_| bad("not a number"))?)
        }
        ("$numberDecimal", Value::String(text)) => {
            Bson::Decimal128(Decimal128::from_str(text).map_err(|e| bad(&e.to_string()))?)
        }
        ("$oid", Value::String(hex)) => {
            Bson::ObjectId(ObjectId::parse_str(hex).map_err(|e| bad(&e.to_string()))?)
        }
        _ => return Ok(None),
    }))
}

/// A BSON document to a JSON object.
pub fn to_map(doc: &Document) -> Map<String, Value> {
    doc.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

/// BSON to relaxed Extended JSON, with dates in the guests' format.
pub fn to_json(value: &Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::Number((*i).into()),
        Bson::Int64(i) => Value::Number((*i).into()),
        Bson::Double(f) => match Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => serde_json::json!({ "$numberDouble": f.to_string() }),
        },
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Bson::Document(doc) => Value::Object(to_map(doc)),
        Bson::DateTime(date) => date_value(date.timestamp_millis()),
        Bson::Decimal128(d) => serde_json::json!({ "$numberDecimal": d.to_string() }),
        Bson::ObjectId(oid) => serde_json::json!({ "$oid": oid.to_hex() }),
        other => other.clone().into_relaxed_extjson(),
    }
}

/// A BSON document as JSON text.
pub fn to_json_text(doc: &Document) -> String {
    Value::Object(to_map(doc)).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An event's payload is the second level of the stored event: 99 levels of its own fit,
    /// 100 do not (mongod stores at most 100 in all). A NUL in a field name never converts.
    #[test]
    fn payloads_nest_at_most_as_deep_as_mongod_stores() {
        let nested = |depth: usize| {
            let text = format!("{}1{}", r#"{"a": "#.repeat(depth), "}".repeat(depth));
            serde_json::from_str::<Value>(&text).expect("nested JSON")
        };
        assert!(check_at(&nested(99), 2).is_ok());
        let refused = check_at(&nested(100), 2).expect_err("too deep");
        assert!(refused.to_string().contains("deeper than 100"), "{refused}");
        let Value::Object(map) = json!({ "a\u{0}b": 1 }) else {
            unreachable!()
        };
        assert!(to_document(&map).is_err());
        assert!(check(&Value::Object(map)).is_err());
    }

    #[test]
    fn round_trips_guest_documents() {
        let original = json!({
            "_id": "p-1", "amount": 100.0, "count": 3, "big": 5_000_000_000i64, "when": { "$date": "2025-01-15T10:00:00.000Z" },
            "price": { "$numberDecimal": "12.30" }, "tags": ["a", { "nested": null }], "flag": true,
        });
        let Value::Object(map) = &original else {
            unreachable!()
        };
        let doc = to_document(map).expect("convert");
        assert!(matches!(doc.get("when"), Some(Bson::DateTime(_))));
        assert!(matches!(doc.get("big"), Some(Bson::Int64(_))));
        assert!(matches!(doc.get("count"), Some(Bson::Int32(3))));
        assert_eq!(Value::Object(to_map(&doc)), original);
    }

    #[test]
    fn dates_outside_1970_to_9999_read_back_in_the_canonical_form() {
        // Found by the property tests: these made the host panic when read back.
        for ms in [-5i64, -62_135_596_800_000, 253_402_300_800_000, i64::MIN] {
            let date = to_bson(&json!({ "$date": ms })).expect("convert");
            let read = to_json(&date);
            assert_eq!(read, json!({ "$date": { "$numberLong": ms.to_string() } }));
            assert_eq!(to_bson(&read).expect("read back"), date);
        }
    }

    #[test]
    fn refuses_malformed_wrappers() {
        assert!(to_bson(&json!({ "$date": "yesterday" })).is_err());
        assert!(to_bson(&json!({ "$numberLong": "x" })).is_err());
        assert!(matches!(
            to_bson(&json!({ "$date": "2025-01-01T00:00:00Z", "other": 1 })),
            Ok(Bson::Document(_))
        ));
    }
}
