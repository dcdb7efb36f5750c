//! Where SecantusDB (0.7.0b3) departs from MongoDB 8.0, the release Refold targets, and the
//! cases of the differential test each departure concerns. The stores follow MongoDB; such
//! cases are left out against SecantusDB only.
//!
//! - **`null` through an array index past the end.** `{"a.1": null}` matches `{"a": [5]}` and
//!   `{"a": []}` on SecantusDB, which reads an index past the end as a missing field. mongod 8.0
//!   yields nothing for such a path, so `null` does not match (its matcher, `path.cpp`, and the
//!   "earlier versions" of the 9.0 compatibility notes, "Null Comparisons on Dotted Paths That
//!   Traverse Arrays"; 9.0 itself evaluates the path as null).
//! - **Sorting through an array whose elements lack the field.** mongod sorts a document by the
//!   keys an index would hold for it, and an index holds `null` for an element of the array
//!   that lacks the rest of the path or is not a document: `{"a": [{"b": 5}, {}]}` sorts by
//!   `a.b` as `null` ascending (SERVER-5065, "works as designed"; SERVER-4529 lists the keys).
//!   SecantusDB leaves such elements out and sorts that document as `5`.

use serde_json::Value;

use super::generate::Case;
use super::{array_index, compares_null};

/// The departure a case runs into on SecantusDB, if any, given the documents it queries.
pub fn departure(case: &Case, documents: &[Value]) -> Option<&'static str> {
    let through_an_index = |path: &str| path.split('.').any(|part| array_index(part).is_some());
    if compares_null(&case.filter, &through_an_index) {
        return Some("null through an array index");
    }
    let sorts_missing_branch = case.sort.split(',').filter(|k| !k.is_empty()).any(|key| {
        let path: Vec<&str> = key.trim_start_matches('-').split('.').collect();
        documents.iter().any(|doc| {
            let mut keys = Keys::default();
            keys.walk(doc, &path, false);
            keys.null_branch && keys.other
        })
    });
    sorts_missing_branch.then_some("sort through an array element lacking the field")
}

/// What mongod's sort keys for a document on a path hold, as far as the departure goes.
#[derive(Default)]
struct Keys {
    /// A `null` for an array element that lacks the rest of the path or is not a document.
    null_branch: bool,
    /// A key that is not `null`.
    other: bool,
}

impl Keys {
    fn walk(&mut self, value: &Value, path: &[&str], in_array: bool) {
        let Some((part, rest)) = path.split_first() else {
            match value {
                Value::Null => {}
                Value::Array(items) if !items.is_empty() => {
                    self.other |= items.iter().any(|item| !item.is_null());
                }
                _ => self.other = true,
            }
            return;
        };
        match value {
            Value::Object(fields) if !is_wrapper(fields) => match fields.get(*part) {
                Some(inner) => self.walk(inner, rest, in_array),
                None => self.null_branch |= in_array,
            },
            Value::Array(items) => {
                if let Some(item) = array_index(part).and_then(|i| items.get(i)) {
                    self.walk(item, rest, in_array);
                    return;
                }
                for item in items {
                    match item {
                        Value::Object(fields) if !is_wrapper(fields) => {
                            self.walk(item, path, true);
                        }
                        _ => self.null_branch = true,
                    }
                }
            }
            _ => self.null_branch |= in_array,
        }
    }
}

/// An Extended JSON value (`{"$date": ...}`), not a document.
fn is_wrapper(fields: &serde_json::Map<String, Value>) -> bool {
    fields.keys().any(|k| k.starts_with('$'))
}
