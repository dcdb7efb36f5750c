//! Read-model queries: a filter in MongoDB's query language (a validated subset), a sort, a
//! skip and a limit.
//!
//! MongoDB runs the filter itself; the embedded store evaluates it here, with MongoDB's
//! semantics, on the same BSON values the MongoDB store would hold (`{"$date": ...}` is a date,
//! `1` and `1.0` are equal numbers), so both stores give the same answers.
//!
//! Supported: field equality (`{"status": "paid"}`, `{"meta": {...}}` for a whole document),
//! `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$in`, `$nin`, `$exists`, and `$and`, `$or`,
//! `$nor`, on dotted paths that reach into documents and arrays. Everything else is refused,
//! with the operator named: above all `$where`, `$function`, `$accumulator` and `$expr`, which
//! would run code on the server.
//!
//! Semantics, as in MongoDB: a comparison only matches values of the same type class (numbers
//! with numbers, strings with strings, dates with dates); a field holding an array matches when
//! the array or any of its elements does; `null` matches a missing field; sorting orders values
//! by type class first, puts missing fields with `null`, and sorts an array field by its
//! smallest element ascending and its largest descending. Ties are broken by `_id`, so every
//! page is deterministic.

use std::cmp::Ordering;

use mongodb::bson::{Bson, Document};
use serde_json::Value;

use super::mongo::convert;

/// Documents returned when the query gives no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Most documents one query returns.
pub const MAX_LIMIT: usize = 1_000;
/// Deepest nesting of `$and`/`$or`/`$nor`.
const MAX_DEPTH: usize = 16;
/// Most values in one `$in`/`$nin`.
const MAX_IN: usize = 1_000;
/// Longest dotted path.
const MAX_PATH: usize = 512;

/// Operators that run code on the server: never accepted.
const CODE_OPERATORS: [&str; 4] = ["$where", "$function", "$accumulator", "$expr"];
/// The Extended JSON wrappers that stand for a value, not an operator.
const VALUE_WRAPPERS: [&str; 6] = [
    "$date",
    "$numberLong",
    "$numberInt",
    "$numberDouble",
    "$numberDecimal",
    "$oid",
];
const SUPPORTED: &str = "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $and, $or, $nor";

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(String);

fn refuse<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(message.into()))
}

/// A validated filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every part matches (a filter object's fields, or `$and`).
    And(Vec<Filter>),
    /// Some part matches.
    Or(Vec<Filter>),
    /// No part matches.
    Nor(Vec<Filter>),
    /// Conditions on one dotted path, all of which must hold.
    Field {
        /// The dotted path.
        path: String,
        /// The conditions.
        ops: Vec<Op>,
    },
}

/// A condition on a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Equal.
    Eq(Bson),
    /// Not equal (also matches a missing field).
    Ne(Bson),
    /// Greater than, within the value's type class.
    Gt(Bson),
    /// Greater or equal.
    Gte(Bson),
    /// Less than.
    Lt(Bson),
    /// Less or equal.
    Lte(Bson),
    /// Equal to one of these.
    In(Vec<Bson>),
    /// Equal to none of these.
    Nin(Vec<Bson>),
    /// The field exists (or not).
    Exists(bool),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Self::Eq(_) => "$eq",
            Self::Ne(_) => "$ne",
            Self::Gt(_) => "$gt",
            Self::Gte(_) => "$gte",
            Self::Lt(_) => "$lt",
            Self::Lte(_) => "$lte",
            Self::In(_) => "$in",
            Self::Nin(_) => "$nin",
            Self::Exists(_) => "$exists",
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Ascending,
    /// Largest first.
    Descending,
}

/// A validated query over one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Which documents.
    pub filter: Filter,
    /// Sort keys, most significant first; `_id` ascending breaks ties.
    pub sort: Vec<(String, Direction)>,
    /// Matching documents to pass over.
    pub skip: usize,
    /// Most documents to return.
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            filter: Filter::And(Vec::new()),
            sort: Vec::new(),
            skip: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl Query {
    /// Validate a query's parts: a filter object, a sort (an object of paths to `1`/`-1`, or
    /// text like `-amount,_id`), a skip and a limit (1 to [`MAX_LIMIT`]).
    pub fn parse(
        filter: Option<&Value>,
        sort: Option<&Value>,
        skip: Option<u64>,
        limit: Option<u64>,
    ) -> Result<Self, QueryError> {
        let filter = match filter {
            None | Some(Value::Null) => Filter::And(Vec::new()),
            Some(value) => parse_filter(value, 0)?,
        };
        let sort = match sort {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => parse_sort(value)?,
        };
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            Some(n) => return refuse(format!("limit {n} is outside 1..={MAX_LIMIT}")),
        };
        let skip = usize::try_from(skip.unwrap_or(0))
            .map_err(|_| QueryError("skip is too large".into()))?;
        Ok(Self {
            filter,
            sort,
            skip,
            limit,
        })
    }

    /// The sort keys with the `_id` tie-break, as the MongoDB store sends them.
    pub fn sort_keys(&self) -> Vec<(String, Direction)> {
        let mut keys = self.sort.clone();
        if !keys.iter().any(|(path, _)| path == "_id") {
            keys.push(("_id".into(), Direction::Ascending));
        }
        keys
    }

    /// The sort as a MongoDB sort document.
    pub fn sort_document(&self) -> Document {
        self.sort_keys()
            .into_iter()
            .map(|(path, direction)| {
                let n = match direction {
                    Direction::Ascending => 1,
                    Direction::Descending => -1,
                };
                (path, Bson::Int32(n))
            })
            .collect()
    }

    /// Order two matching documents by the sort keys.
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        for (path, direction) in self.sort_keys() {
            let ordering = match direction {
                Direction::Ascending => {
                    sort_key(a, &path, direction).cmp_bson(&sort_key(b, &path, direction))
                }
                Direction::Descending => {
                    sort_key(b, &path, direction).cmp_bson(&sort_key(a, &path, direction))
                }
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }
}

fn check_path(path: &str) -> Result<(), QueryError> {
    if path.is_empty() || path.len() > MAX_PATH {
        return refuse(format!("field path must have 1 to {MAX_PATH} bytes"));
    }
    if path.contains('\0') {
        return refuse("field path contains a NUL character");
    }
    for part in path.split('.') {
        if part.is_empty() {
            return refuse(format!("field path `{path}` has an empty part"));
        }
        if part.starts_with('$') {
            return refuse(format!(
                "field path `{path}` has a part starting with `$`: operators go inside a field's condition"
            ));
        }
    }
    Ok(())
}

fn refuse_operator<T>(operator: &str) -> Result<T, QueryError> {
    if CODE_OPERATORS.contains(&operator) {
        refuse(format!(
            "operator `{operator}` is not allowed: filters cannot run code; use {SUPPORTED}"
        ))
    } else {
        refuse(format!(
            "unknown or unsupported operator `{operator}`; use {SUPPORTED}"
        ))
    }
}

fn parse_filter(value: &Value, depth: usize) -> Result<Filter, QueryError> {
    if depth > MAX_DEPTH {
        return refuse(format!(
            "filter nests $and/$or/$nor deeper than {MAX_DEPTH}"
        ));
    }
    let Value::Object(map) = value else {
        return refuse(format!("a filter must be a JSON object, not {value}"));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key.starts_with('$') {
            let Value::Array(items) = value else {
                return match key.as_str() {
                    "$and" | "$or" | "$nor" => refuse(format!("`{key}` needs an array of filters")),
                    other => refuse_operator(other),
                };
            };
            let children = match key.as_str() {
                "$and" | "$or" | "$nor" => {
                    if items.is_empty() {
                        return refuse(format!("`{key}` needs at least one filter"));
                    }
                    items
                        .iter()
                        .map(|item| parse_filter(item, depth + 1))
                        .collect::<Result<Vec<_>, _>>()?
                }
                other => return refuse_operator(other),
            };
            parts.push(match key.as_str() {
                "$and" => Filter::And(children),
                "$or" => Filter::Or(children),
                _ => Filter::Nor(children),
            });
        } else {
            check_path(key)?;
            parts.push(Filter::Field {
                path: key.clone(),
                ops: parse_condition(key, value)?,
            });
        }
    }
    Ok(Filter::And(parts))
}

fn is_operator_object(value: &Value) -> bool {
    match value {
        Value::Object(map) => {
            map.keys().any(|k| k.starts_with('$'))
                && !(map.len() == 1 && map.keys().all(|k| VALUE_WRAPPERS.contains(&k.as_str())))
        }
        _ => false,
    }
}

fn to_bson(path: &str, value: &Value) -> Result<Bson, QueryError> {
    convert::to_bson(value).map_err(|e| QueryError(format!("`{path}`: {e}")))
}

fn parse_condition(path: &str, value: &Value) -> Result<Vec<Op>, QueryError> {
    if !is_operator_object(value) {
        return Ok(vec![Op::Eq(to_bson(path, value)?)]);
    }
    let Value::Object(map) = value else {
        return Ok(Vec::new());
    };
    if map.keys().any(|k| !k.starts_with('$')) {
        return refuse(format!(
            "`{path}` mixes operators and field names; write {{\"{path}\": {{\"$eq\": {{...}}}}}} to match a whole document"
        ));
    }
    map.iter()
        .map(|(operator, operand)| {
            let value = || to_bson(path, operand);
            let list = || match operand {
                Value::Array(items) if items.len() <= MAX_IN => {
                    items.iter().map(|item| to_bson(path, item)).collect()
                }
                Value::Array(_) => refuse(format!(
                    "`{path}`: `{operator}` takes at most {MAX_IN} values"
                )),
                other => refuse(format!(
                    "`{path}`: `{operator}` needs an array, not {other}"
                )),
            };
            Ok(match operator.as_str() {
                "$eq" => Op::Eq(value()?),
                "$ne" => Op::Ne(value()?),
                "$gt" => Op::Gt(value()?),
                "$gte" => Op::Gte(value()?),
                "$lt" => Op::Lt(value()?),
                "$lte" => Op::Lte(value()?),
                "$in" => Op::In(list()?),
                "$nin" => Op::Nin(list()?),
                "$exists" => match operand {
                    Value::Bool(b) => Op::Exists(*b),
                    other => {
                        return refuse(format!(
                            "`{path}`: `$exists` needs true or false, not {other}"
                        ));
                    }
                },
                other => return refuse_operator(other),
            })
        })
        .collect()
}

fn parse_sort(value: &Value) -> Result<Vec<(String, Direction)>, QueryError> {
    let keys: Vec<(String, Direction)> = match value {
        Value::String(text) => text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|key| match key.strip_prefix('-') {
                Some(path) => (path.to_owned(), Direction::Descending),
                None => (
                    key.strip_prefix('+').unwrap_or(key).to_owned(),
                    Direction::Ascending,
                ),
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(path, direction)| match direction.as_i64() {
                Some(1) => Ok((path.clone(), Direction::Ascending)),
                Some(-1) => Ok((path.clone(), Direction::Descending)),
                _ => refuse(format!(
                    "sort direction of `{path}` must be 1 or -1, not {direction}"
                )),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return refuse(format!(
                "sort must be an object like {{\"amount\": -1}} or text like `-amount,_id`, not {other}"
            ));
        }
    };
    if keys.len() > 8 {
        return refuse("sort takes at most 8 keys");
    }
    for (i, (path, _)) in keys.iter().enumerate() {
        check_path(path)?;
        if keys[..i].iter().any(|(p, _)| p == path) {
            return refuse(format!("sort names `{path}` twice"));
        }
    }
    Ok(keys)
}

// ---------------------------------------------------------------------------------------------
// Rendering for MongoDB

impl Filter {
    /// The filter as a MongoDB filter document.
    pub fn to_document(&self) -> Document {
        match self {
            Self::And(parts) => match parts.as_slice() {
                [] => Document::new(),
                [one] => one.to_document(),
                many => doc_of("$and", many),
            },
            Self::Or(parts) => doc_of("$or", parts),
            Self::Nor(parts) => doc_of("$nor", parts),
            Self::Field { path, ops } => {
                let mut condition = Document::new();
                for op in ops {
                    let operand = match op {
                        Op::Eq(v) | Op::Ne(v) | Op::Gt(v) | Op::Gte(v) | Op::Lt(v) | Op::Lte(v) => {
                            v.clone()
                        }
                        Op::In(vs) | Op::Nin(vs) => Bson::Array(vs.clone()),
                        Op::Exists(b) => Bson::Boolean(*b),
                    };
                    condition.insert(op.name(), operand);
                }
                let mut document = Document::new();
                document.insert(path.clone(), condition);
                document
            }
        }
    }

    /// Whether a document matches, with MongoDB's semantics.
    pub fn matches(&self, document: &Document) -> bool {
        match self {
            Self::And(parts) => parts.iter().all(|p| p.matches(document)),
            Self::Or(parts) => parts.iter().any(|p| p.matches(document)),
            Self::Nor(parts) => !parts.iter().any(|p| p.matches(document)),
            Self::Field { path, ops } => {
                let found = lookup(document, path);
                ops.iter().all(|op| op_matches(op, &found))
            }
        }
    }
}

fn doc_of(operator: &str, parts: &[Filter]) -> Document {
    let mut document = Document::new();
    document.insert(
        operator,
        Bson::Array(
            parts
                .iter()
                .map(|p| Bson::Document(p.to_document()))
                .collect(),
        ),
    );
    document
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// What a dotted path reaches in a document: each value found, and `None` for a branch where
/// the field is missing.
fn lookup<'a>(document: &'a Document, path: &str) -> Vec<Option<&'a Bson>> {
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

fn op_matches(op: &Op, found: &[Option<&Bson>]) -> bool {
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
fn sort_key(document: &Document, path: &str, direction: Direction) -> Bson {
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
trait CmpBson {
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

/// Apply a query to documents in memory (the embedded store's evaluation): filter, sort, skip,
/// limit. Each item pairs a document's BSON form, for matching, with what is returned.
pub fn run<T>(query: &Query, documents: impl IntoIterator<Item = (Document, T)>) -> Vec<T> {
    let mut matching: Vec<(Document, T)> = documents
        .into_iter()
        .filter(|(document, _)| query.filter.matches(document))
        .collect();
    matching.sort_by(|(a, _), (b, _)| query.compare(a, b));
    matching
        .into_iter()
        .skip(query.skip)
        .take(query.limit)
        .map(|(_, item)| item)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document(value: Value) -> Document {
        let Value::Object(map) = value else {
            unreachable!("test documents are objects")
        };
        convert::to_document(&map).expect("document")
    }

    fn matches(filter: Value, doc: Value) -> bool {
        Query::parse(Some(&filter), None, None, None)
            .expect("valid filter")
            .filter
            .matches(&document(doc))
    }

    fn refused(filter: Value) -> String {
        Query::parse(Some(&filter), None, None, None)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn comparisons_stay_within_a_type_class() {
        let doc =
            json!({ "_id": "a", "n": 5, "s": "5", "d": { "$date": "2025-01-02T00:00:00.000Z" } });
        assert!(matches(json!({ "n": { "$gt": 4.5 } }), doc.clone()));
        assert!(matches(json!({ "n": 5.0 }), doc.clone()));
        assert!(!matches(json!({ "s": { "$gt": 4 } }), doc.clone()));
        assert!(matches(json!({ "s": { "$gte": "4" } }), doc.clone()));
        assert!(matches(
            json!({ "d": { "$lt": { "$date": "2025-02-01T00:00:00.000Z" } } }),
            doc.clone()
        ));
        assert!(!matches(json!({ "d": { "$lt": "2025-02-01" } }), doc));
    }

    #[test]
    fn null_matches_missing_fields_and_arrays_match_by_element() {
        let doc = json!({ "_id": "a", "tags": ["x", "y"], "lines": [{ "sku": "k1", "qty": 2 }, { "sku": "k2" }] });
        assert!(matches(json!({ "missing": null }), doc.clone()));
        assert!(!matches(
            json!({ "missing": { "$exists": true } }),
            doc.clone()
        ));
        assert!(matches(json!({ "tags": "y" }), doc.clone()));
        assert!(matches(json!({ "tags": ["x", "y"] }), doc.clone()));
        assert!(matches(
            json!({ "tags": { "$in": ["z", "x"] } }),
            doc.clone()
        ));
        assert!(matches(json!({ "tags": { "$nin": ["z"] } }), doc.clone()));
        assert!(matches(json!({ "lines.sku": "k2" }), doc.clone()));
        assert!(matches(json!({ "lines.qty": { "$gte": 2 } }), doc.clone()));
        assert!(matches(json!({ "lines.qty": null }), doc.clone()));
        assert!(matches(json!({ "lines.0.sku": "k1" }), doc.clone()));
        assert!(matches(json!({ "tags": { "$ne": "z" } }), doc.clone()));
        assert!(!matches(json!({ "tags": { "$ne": "x" } }), doc));
    }

    #[test]
    fn logical_operators_combine() {
        let doc = json!({ "_id": "a", "n": 5, "s": "x" });
        assert!(matches(
            json!({ "$or": [{ "n": 1 }, { "s": "x" }] }),
            doc.clone()
        ));
        assert!(!matches(
            json!({ "$and": [{ "n": 5 }, { "s": "y" }] }),
            doc.clone()
        ));
        assert!(matches(
            json!({ "$nor": [{ "n": 1 }, { "s": "y" }] }),
            doc.clone()
        ));
        assert!(matches(json!({ "n": { "$gt": 1, "$lt": 6 } }), doc));
    }

    #[test]
    fn refuses_code_and_unknown_operators_by_name() {
        assert!(refused(json!({ "$where": "sleep(1000)" })).contains("`$where` is not allowed"));
        assert!(
            refused(json!({ "n": { "$function": {} } })).contains("`$function` is not allowed")
        );
        assert!(refused(json!({ "$expr": {} })).contains("`$expr` is not allowed"));
        assert!(
            refused(json!({ "n": { "$regex": "a" } })).contains("unsupported operator `$regex`")
        );
        assert!(refused(json!({ "n": { "$gt": 1, "x": 2 } })).contains("mixes operators"));
        assert!(refused(json!({ "a..b": 1 })).contains("empty part"));
        assert!(refused(json!({ "$or": [] })).contains("at least one"));
        assert!(refused(json!({ "n": { "$in": 3 } })).contains("needs an array"));
        assert!(refused(json!([1])).contains("must be a JSON object"));
        let mut deep = json!({ "n": 1 });
        for _ in 0..20 {
            deep = json!({ "$and": [deep] });
        }
        assert!(refused(deep).contains("deeper"));
    }

    #[test]
    fn sorts_by_type_class_then_value_with_the_id_tie_break() {
        let docs = [
            json!({ "_id": "d", "v": "text" }),
            json!({ "_id": "c", "v": 2 }),
            json!({ "_id": "b" }),
            json!({ "_id": "a", "v": 2.0 }),
            json!({ "_id": "e", "v": [10, 1] }),
        ];
        let ids = |sort: &str| {
            let query = Query::parse(None, Some(&json!(sort)), None, None).expect("query");
            run(
                &query,
                docs.iter().map(|d| (document(d.clone()), d["_id"].clone())),
            )
        };
        assert_eq!(
            ids("v"),
            [json!("b"), json!("e"), json!("a"), json!("c"), json!("d")]
        );
        assert_eq!(
            ids("-v"),
            [json!("d"), json!("e"), json!("a"), json!("c"), json!("b")]
        );
    }

    #[test]
    fn renders_the_filter_for_mongodb() {
        let query = Query::parse(
            Some(&json!({ "n": { "$gte": 1 }, "$or": [{ "s": "x" }] })),
            Some(&json!({ "n": -1 })),
            None,
            Some(5),
        )
        .expect("query");
        assert_eq!(
            Bson::Document(query.filter.to_document()).into_relaxed_extjson(),
            json!({ "$and": [{ "n": { "$gte": 1 } }, { "$or": [{ "s": { "$eq": "x" } }] }] })
        );
        assert_eq!(
            Bson::Document(query.sort_document()).into_relaxed_extjson(),
            json!({ "n": -1, "_id": 1 })
        );
        assert!(Query::parse(None, None, None, Some(0)).is_err());
        assert!(Query::parse(None, None, None, Some(5_000)).is_err());
    }
}
