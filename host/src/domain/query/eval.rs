//! Evaluating a filter on BSON documents in memory, with MongoDB's semantics, and MongoDB's
//! order of BSON values: the embedded store's query engine (sort keys are in `sort.rs`).

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::Op;

/// What a dotted path reaches in a document, as MongoDB's matcher walks it: each value a
/// condition is tested against, and `None` where the path ends at a missing field.
///
/// A path that ends at an array yields its elements and then the array itself (a condition
/// holds when it holds for the array or one of its elements). An array in the middle of a path
/// yields only what its documents hold for the rest of the path, and the element a numeric part
/// names; its other elements yield nothing, so `[]` or `[1, null]` there gives no value at all
/// and `{"a.b": null}` does not match `{"a": []}`. That is MongoDB 8.0's rule, the release
/// Refold targets (`compose.yaml`); MongoDB 9.0 evaluates such a path as null instead (its
/// "Compatibility Changes in MongoDB 9.0", "Null Comparisons on Dotted Paths That Traverse
/// Arrays", which states the earlier rule too).
pub(super) fn lookup<'a>(document: &'a Document, path: &str) -> Vec<Option<&'a Bson>> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut found = Vec::new();
    in_document(document, &parts, &mut found);
    found
}

fn in_document<'a>(document: &'a Document, parts: &[&str], found: &mut Vec<Option<&'a Bson>>) {
    match document.get(parts[0]) {
        None => found.push(None),
        Some(value) => descend(value, &parts[1..], found),
    }
}

/// `value`, reached by a field name, with `rest` of the path still to follow.
fn descend<'a>(value: &'a Bson, rest: &[&str], found: &mut Vec<Option<&'a Bson>>) {
    match (value, rest) {
        (Bson::Array(items), []) => {
            found.extend(items.iter().map(Some));
            found.push(Some(value));
        }
        (_, []) => found.push(Some(value)),
        (Bson::Document(inner), _) => in_document(inner, rest, found),
        (Bson::Array(items), _) => through_array(items, rest, found),
        // A scalar where the path goes on: the field is missing.
        _ => found.push(None),
    }
}

/// An array in the middle of a path (see [`lookup`]).
fn through_array<'a>(items: &'a [Bson], rest: &[&str], found: &mut Vec<Option<&'a Bson>>) {
    let index = array_index(rest[0]);
    for (i, item) in items.iter().enumerate() {
        if let Bson::Document(inner) = item {
            in_document(inner, rest, found);
        }
        if index != Some(i) {
            continue;
        }
        match (item, &rest[1..]) {
            // The element a path ends at by its index is not expanded: `{"a.0": 1}` does not
            // match `{"a": [[1]]}`.
            (_, []) => found.push(Some(item)),
            (Bson::Document(inner), more) => in_document(inner, more, found),
            (Bson::Array(nested), more) => through_array(nested, more, found),
            _ => {}
        }
    }
}

/// The array index a path part names: digits in canonical form (`0`, `12`; not `01`, `+1`).
pub(super) fn array_index(part: &str) -> Option<usize> {
    let canonical = !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_digit())
        && (part == "0" || !part.starts_with('0'));
    canonical.then(|| part.parse().ok()).flatten()
}

fn equals_any(found: &[Option<&Bson>], target: &Bson) -> bool {
    if is_null(target) && found.iter().any(Option::is_none) {
        return true;
    }
    found
        .iter()
        .flatten()
        .any(|v| rank(v) == rank(target) && v.cmp_bson(target) == Ordering::Equal)
}

fn compares(found: &[Option<&Bson>], target: &Bson, accept: fn(Ordering) -> bool) -> bool {
    if is_null(target) {
        // Only `$gte: null` and `$lte: null` match, as `null` does.
        return accept(Ordering::Equal) && equals_any(found, target);
    }
    found
        .iter()
        .flatten()
        .any(|v| rank(v) == rank(target) && accept(v.cmp_bson(target)))
}

pub(super) fn op_matches(op: &Op, found: &[Option<&Bson>]) -> bool {
    match op {
        Op::Eq(target) => equals_any(found, target),
        Op::Ne(target) => !equals_any(found, target),
        Op::In(targets) => targets.iter().any(|t| equals_any(found, t)),
        Op::Nin(targets) => !targets.iter().any(|t| equals_any(found, t)),
        Op::Exists(wanted) => found.iter().any(Option::is_some) == *wanted,
        Op::Gt(target) => compares(found, target, |o| o == Ordering::Greater),
        Op::Gte(target) => compares(found, target, |o| o != Ordering::Less),
        Op::Lt(target) => compares(found, target, |o| o == Ordering::Less),
        Op::Lte(target) => compares(found, target, |o| o != Ordering::Greater),
    }
}

fn is_null(value: &Bson) -> bool {
    matches!(value, Bson::Null | Bson::Undefined)
}

/// MongoDB's order of type classes.
fn rank(value: &Bson) -> u8 {
    match value {
        Bson::MinKey => 1,
        Bson::Null | Bson::Undefined => 2,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 3,
        Bson::String(_) | Bson::Symbol(_) => 4,
        Bson::Document(_) => 5,
        Bson::Array(_) => 6,
        Bson::Binary(_) => 7,
        Bson::ObjectId(_) => 8,
        Bson::Boolean(_) => 9,
        Bson::DateTime(_) => 10,
        Bson::Timestamp(_) => 11,
        Bson::RegularExpression(_) => 12,
        Bson::MaxKey => 14,
        _ => 13,
    }
}

enum Number {
    Int(i64),
    Float(f64),
}

fn number(value: &Bson) -> Number {
    match value {
        Bson::Int32(i) => Number::Int(i64::from(*i)),
        Bson::Int64(i) => Number::Int(*i),
        Bson::Double(f) => Number::Float(*f),
        Bson::Decimal128(d) => Number::Float(d.to_string().parse().unwrap_or(f64::NAN)),
        _ => Number::Float(f64::NAN),
    }
}

fn cmp_float(a: f64, b: f64) -> Ordering {
    // NaN sorts below every other number, as in MongoDB.
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// MongoDB's total order over BSON values.
pub(super) trait CmpBson {
    fn cmp_bson(&self, other: &Self) -> Ordering;
}

impl CmpBson for Bson {
    fn cmp_bson(&self, other: &Self) -> Ordering {
        let by_rank = rank(self).cmp(&rank(other));
        if by_rank != Ordering::Equal {
            return by_rank;
        }
        match (self, other) {
            (Bson::String(a), Bson::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Bson::Document(a), Bson::Document(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b.iter()) {
                    let ordering = rank(va)
                        .cmp(&rank(vb))
                        .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                        .then_with(|| va.cmp_bson(vb));
                    if ordering != Ordering::Equal {
                        return ordering;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Bson::Array(a), Bson::Array(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    let ordering = x.cmp_bson(y);
                    if ordering != Ordering::Equal {
                        return ordering;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Bson::ObjectId(a), Bson::ObjectId(b)) => a.bytes().cmp(&b.bytes()),
            (Bson::Boolean(a), Bson::Boolean(b)) => a.cmp(b),
            (Bson::DateTime(a), Bson::DateTime(b)) => {
                a.timestamp_millis().cmp(&b.timestamp_millis())
            }
            (Bson::Timestamp(a), Bson::Timestamp(b)) => {
                (a.time, a.increment).cmp(&(b.time, b.increment))
            }
            (Bson::Binary(a), Bson::Binary(b)) => a
                .bytes
                .len()
                .cmp(&b.bytes.len())
                .then_with(|| a.bytes.cmp(&b.bytes)),
            _ if rank(self) == 3 => match (number(self), number(other)) {
                (Number::Int(a), Number::Int(b)) => a.cmp(&b),
                (Number::Int(a), Number::Float(b)) => cmp_float(a as f64, b),
                (Number::Float(a), Number::Int(b)) => cmp_float(a, b as f64),
                (Number::Float(a), Number::Float(b)) => cmp_float(a, b),
            },
            _ => Ordering::Equal,
        }
    }
}
