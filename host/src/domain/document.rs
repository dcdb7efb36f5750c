//! Read-model documents: JSON objects whose `_id` is their id, their limits and their checks.
//! The update operators the host applies to them are in [`super::update`].

use serde_json::{Map, Value};

/// A document: a JSON object whose `_id` is its id.
pub type Document = Map<String, Value>;

/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 512;
/// Largest document, as JSON text: below MongoDB's 16 MiB BSON limit with room for encoding.
pub const MAX_DOCUMENT_BYTES: usize = 15 * 1024 * 1024;

/// A document that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The id is empty, too long or contains a NUL.
    #[error("document id must have 1 to {MAX_ID_BYTES} bytes and no NUL")]
    InvalidId,
    /// The text is not a JSON object.
    #[error("document is not a JSON object: {0}")]
    NotAnObject(String),
    /// The text is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("document has {0} bytes; at most {MAX_DOCUMENT_BYTES} are allowed")]
    TooLarge(usize),
}

/// The length of a document (or any value) as compact JSON, without building the text.
pub fn encoded_len<T: serde::Serialize + ?Sized>(document: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and JSON values always serialise.
    let _ = serde_json::to_writer(&mut count, document);
    count.0
}

/// Check a document id.
pub fn check_id(id: &str) -> Result<(), DocumentError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.contains('\0') {
        return Err(DocumentError::InvalidId);
    }
    Ok(())
}

/// Parse a document written by a guest and stamp it with its id.
pub fn parse_document(id: &str, json: &str) -> Result<Map<String, Value>, DocumentError> {
    if json.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge(json.len()));
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(mut map)) => {
            stamp_id(&mut map, id);
            Ok(map)
        }
        Ok(other) => Err(DocumentError::NotAnObject(format!(
            "found {}",
            kind(&other)
        ))),
        Err(e) => Err(DocumentError::NotAnObject(e.to_string())),
    }
}

/// Put `_id` first, as MongoDB does.
pub(crate) fn stamp_id(map: &mut Map<String, Value>, id: &str) {
    // Most updates find it there already (an update cannot change `_id`).
    if map
        .iter()
        .next()
        .is_some_and(|(key, value)| key == "_id" && value.as_str() == Some(id))
    {
        return;
    }
    map.shift_remove("_id");
    map.shift_insert(0, "_id".to_owned(), Value::String(id.to_owned()));
}

/// Why the value at a field path cannot be a unique index's key, if it cannot: a key is one
/// string, number or boolean (or missing, or null), which both stores compare alike. MongoDB
/// would index each element of an array, the embedded store the array whole; documents and
/// Extended JSON wrappers (`{"$numberLong": "5"}` is MongoDB's 5, the embedded store's text)
/// compare by their written form on the embedded store.
pub fn unique_key_problem(document: &Document, path: &str) -> Option<&'static str> {
    let mut map = document;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match map.get(segment) {
            Some(Value::Array(_)) if last => return Some("holds an array"),
            Some(Value::Array(_)) => return Some("lies across an array"),
            Some(Value::Object(_)) if last => return Some("holds a document"),
            Some(Value::Object(inner)) => map = inner,
            _ => return None,
        }
    }
    None
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn documents_are_objects_stamped_with_their_id() {
        let doc = parse_document("x", r#"{"a":1,"_id":"other"}"#).map(Value::Object);
        assert_eq!(doc, Ok(json!({"_id": "x", "a": 1})));
        assert!(parse_document("x", "[1]").is_err());
        assert!(parse_document("x", "{").is_err());
    }

    #[test]
    fn measures_documents_as_compact_json() {
        let Value::Object(doc) = json!({ "_id": "a", "s": "é\"\n", "n": [1, 2.5, null], "o": {} })
        else {
            unreachable!()
        };
        assert_eq!(
            encoded_len(&doc),
            serde_json::to_string(&doc).map(|t| t.len()).unwrap_or(0)
        );
    }
}
