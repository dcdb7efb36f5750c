//! Sort keys: the value a document sorts by on one path, as MongoDB computes it.
//!
//! A document's *keys* on a path are the values an index on that path would hold for it
//! (MongoDB sorts by them since 3.6, SERVER-19402): a field's value; each element of an array
//! the path ends at, and for an empty one a key below `null`; `null` where the field is missing,
//! where a scalar stands in the middle of the path, and for each element of an array in the
//! middle of the path that is not a document. An ascending sort takes a document's smallest key,
//! a descending one its largest (MongoDB's "Comparison/Sort Order" page: "an ascending sort
//! compares the smallest elements of the array", "a descending sort compares the largest", and
//! "a comparison of an empty array ... considers the empty array as less than a null value or a
//! missing field value"; a non-existent field sorts as `null`).

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::Direction;
use super::eval::{CmpBson, array_index};

static NULL: Bson = Bson::Null;

/// One key a document may sort by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum SortKey<'a> {
    /// An empty array at the end of the path: below `null`, above MinKey.
    EmptyArray,
    /// A value (`null` for a missing field).
    Value(&'a Bson),
}

impl SortKey<'_> {
    /// MongoDB's order of keys, ascending.
    pub(super) fn cmp_key(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::EmptyArray, Self::EmptyArray) => Ordering::Equal,
            (Self::EmptyArray, Self::Value(v)) => below_null(v),
            (Self::Value(v), Self::EmptyArray) => below_null(v).reverse(),
            (Self::Value(a), Self::Value(b)) => a.cmp_bson(b),
        }
    }
}

/// How an empty array's key compares with `value`.
fn below_null(value: &Bson) -> Ordering {
    match value {
        Bson::MinKey => Ordering::Greater,
        _ => Ordering::Less,
    }
}

/// The key a document sorts by on `path` in `direction`: its smallest key ascending, its
/// largest descending.
pub(super) fn sort_key<'a>(
    document: &'a Document,
    path: &str,
    direction: Direction,
) -> SortKey<'a> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut keys = Vec::new();
    in_document(document, &parts, &mut keys);
    let pick = |best: SortKey<'a>, key: SortKey<'a>| {
        let ordering = key.cmp_key(&best);
        let better = match direction {
            Direction::Ascending => ordering == Ordering::Less,
            Direction::Descending => ordering == Ordering::Greater,
        };
        if better { key } else { best }
    };
    keys.into_iter()
        .reduce(pick)
        .unwrap_or(SortKey::Value(&NULL))
}

/// Compare two documents' keys on one sort path.
pub(super) fn compare_on(a: &Document, b: &Document, path: &str, direction: Direction) -> Ordering {
    direction.apply(sort_key(a, path, direction).cmp_key(&sort_key(b, path, direction)))
}

fn in_document<'a>(document: &'a Document, parts: &[&str], keys: &mut Vec<SortKey<'a>>) {
    match document.get(parts[0]) {
        None => keys.push(SortKey::Value(&NULL)),
        Some(value) => descend(value, &parts[1..], keys),
    }
}

fn descend<'a>(value: &'a Bson, rest: &[&str], keys: &mut Vec<SortKey<'a>>) {
    match (value, rest) {
        (Bson::Array(items), []) if items.is_empty() => keys.push(SortKey::EmptyArray),
        (Bson::Array(items), []) => keys.extend(items.iter().map(SortKey::Value)),
        (_, []) => keys.push(SortKey::Value(value)),
        (Bson::Document(inner), _) => in_document(inner, rest, keys),
        (Bson::Array(items), _) => through_array(items, rest, keys),
        _ => keys.push(SortKey::Value(&NULL)),
    }
}

/// An array in the middle of the path: the element a numeric part names, alone (and as it is,
/// not expanded, when the path ends there); otherwise each document element for the rest of
/// the path and `null` for every other element (and for an empty array).
fn through_array<'a>(items: &'a [Bson], rest: &[&str], keys: &mut Vec<SortKey<'a>>) {
    if let Some(item) = array_index(rest[0]).and_then(|i| items.get(i)) {
        match &rest[1..] {
            [] => keys.push(SortKey::Value(item)),
            more => descend(item, more, keys),
        }
        return;
    }
    if items.is_empty() {
        keys.push(SortKey::Value(&NULL));
    }
    for item in items {
        match item {
            Bson::Document(inner) => in_document(inner, rest, keys),
            _ => keys.push(SortKey::Value(&NULL)),
        }
    }
}
