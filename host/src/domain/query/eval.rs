//! Evaluating a filter and a sort on BSON documents in memory, with MongoDB's semantics: the
//! embedded store's query engine.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::{Direction, Op};

/// What a dotted path reaches in a document: each value found, and `None` for a branch where
/// the field is missing.
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

fn descend<'a>(value: &'a Bson, rest: &[&str], found: &mut Vec<Option<&'a Bson>>) {
    if rest.is_empty() {
        found.push(Some(value));
        return;
    }
    match value {
        Bson::Document(inner) => in_document(inner, rest, found),
        Bson::Array(items) => {
            let before = found.len();
            if let Ok(index) = rest[0].parse::<usize>()
                && let Some(item) = items.get(index)
            {
                descend(item, &rest[1..], found);
            }
            for item in items {
                if let Bson::Document(inner) = item {
                    in_document(inner, rest, found);
                }
            }
            if found.len() == before {
                found.push(None);
            }
        }
        _ => found.push(None),
    }
}

/// Each value found, and for arrays each element too (MongoDB matches either).
fn expanded<'a>(found: &[Option<&'a Bson>]) -> impl Iterator<Item = &'a Bson> {
    found.iter().flatten().flat_map(|value| {
        let elements: &[Bson] = match value {
            Bson::Array(items) => items,
            _ => &[],
        };
        std::iter::once(*value).chain(elements.iter())
    })
}

fn equals_any(found: &[Option<&Bson>], target: &Bson) -> bool {
    if is_null(target) && found.iter().any(Option::is_none) {
        return true;
    }
    expanded(found).any(|v| rank(v) == rank(target) && v.cmp_bson(target) == Ordering::Equal)
}

fn compares(found: &[Option<&Bson>], target: &Bson, accept: fn(Ordering) -> bool) -> bool {
    if is_null(target) {
        // Only `$gte: null` and `$lte: null` match, as `null` does.
        return accept(Ordering::Equal) && equals_any(found, target);
    }
    expanded(found).any(|v| rank(v) == rank(target) && accept(v.cmp_bson(target)))
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

/// The value a document sorts by on one key: missing is null; an array counts as its smallest
/// element ascending and its largest descending.
pub(super) fn sort_key(document: &Document, path: &str, direction: Direction) -> Bson {
    let found = lookup(document, path);
    let mut candidates = found.iter().flatten().flat_map(|value| match value {
        Bson::Array(items) if !items.is_empty() => items.iter().collect::<Vec<_>>(),
        other => vec![*other],
    });
    let first = candidates.next();
    let best = candidates.fold(first, |best, v| match best {
        None => Some(v),
        Some(b) => {
            let better = match direction {
                Direction::Ascending => v.cmp_bson(b) == Ordering::Less,
                Direction::Descending => v.cmp_bson(b) == Ordering::Greater,
            };
            Some(if better { v } else { b })
        }
    });
    best.cloned().unwrap_or(Bson::Null)
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
