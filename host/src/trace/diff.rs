//! What one event changed in a document: a field-level difference of two JSON objects.

use serde::Serialize;
use serde_json::{Map, Value};

/// One field that differs between the document before an event and after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Dotted path of the field (`status`, `totals.count`); an array is one field, compared
    /// whole.
    pub path: String,
    /// Its value before the event; absent when the event added it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Its value after the event; absent when the event removed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// The fields that differ between `before` and `after` (either may be absent: a document
/// created or deleted), in the order of their paths. Nested objects are compared field by
/// field; numbers compare by value, so `1` and `1.0` are the same.
pub fn changes(
    before: Option<&Map<String, Value>>,
    after: Option<&Map<String, Value>>,
) -> Vec<Change> {
    let empty = Map::new();
    let mut found = Vec::new();
    compare(
        "",
        before.unwrap_or(&empty),
        after.unwrap_or(&empty),
        &mut found,
    );
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

fn compare(
    prefix: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    found: &mut Vec<Change>,
) {
    let path = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    for (key, old) in before {
        match (old, after.get(key)) {
            (_, None) => found.push(Change {
                path: path(key),
                before: Some(old.clone()),
                after: None,
            }),
            (Value::Object(inner_old), Some(new @ Value::Object(inner_new)))
                if is_nested(old) && is_nested(new) =>
            {
                compare(&path(key), inner_old, inner_new, found);
            }
            (_, Some(new)) if !same(old, new) => found.push(Change {
                path: path(key),
                before: Some(old.clone()),
                after: Some(new.clone()),
            }),
            _ => {}
        }
    }
    for (key, new) in after {
        if !before.contains_key(key) {
            found.push(Change {
                path: path(key),
                before: None,
                after: Some(new.clone()),
            });
        }
    }
}

/// An object compared field by field: not a value in Extended JSON (`{"$date": ...}`), which
/// is one value.
fn is_nested(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.keys().next().is_some_and(|k| k.starts_with('$')),
        _ => false,
    }
}

/// Equal as a reader sees them: numbers by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, a)| y.get(key).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// Whether two documents hold the same fields and values (numbers by value).
pub fn same_document(a: Option<&Map<String, Value>>, b: Option<&Map<String, Value>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same(&Value::Object(a.clone()), &Value::Object(b.clone())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn changes_name_each_field_added_changed_and_removed_by_path() {
        let before = object(
            json!({"_id": "p", "status": "new", "n": 1, "totals": {"a": 1, "b": 2}, "gone": true, "tags": [1]}),
        );
        let after = object(
            json!({"_id": "p", "status": "paid", "n": 1.0, "totals": {"a": 1, "b": 3, "c": 4}, "tags": [1, 2]}),
        );
        let found = changes(Some(&before), Some(&after));
        let paths: Vec<_> = found.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["gone", "status", "tags", "totals.b", "totals.c"]);
        assert_eq!(found[0].after, None);
        assert_eq!(found[1].before, Some(json!("new")));
        assert_eq!(found[1].after, Some(json!("paid")));
        assert_eq!(found[4].before, None);
    }

    #[test]
    fn a_created_or_deleted_document_changes_every_field() {
        let doc = object(json!({"_id": "p", "a": {"b": 1}}));
        let created = changes(None, Some(&doc));
        assert_eq!(created.len(), 2);
        assert!(created.iter().all(|c| c.before.is_none()));
        let deleted = changes(Some(&doc), None);
        assert!(deleted.iter().all(|c| c.after.is_none()));
        assert!(same_document(Some(&doc), Some(&doc.clone())));
        assert!(!same_document(Some(&doc), None));
    }

    #[test]
    fn an_object_replaced_by_a_scalar_is_one_change() {
        let before = object(json!({"a": {"b": 1}}));
        let after = object(json!({"a": 2}));
        let found = changes(Some(&before), Some(&after));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "a");
        let before = object(json!({"at": {"$date": "2025-01-01T00:00:00Z"}}));
        let after = object(json!({"at": {"$date": "2025-01-02T00:00:00Z"}}));
        let found = changes(Some(&before), Some(&after));
        assert_eq!(found[0].path, "at", "an Extended JSON value is one value");
        assert_eq!(
            found[0].after,
            Some(json!({"$date": "2025-01-02T00:00:00Z"}))
        );
    }
}
