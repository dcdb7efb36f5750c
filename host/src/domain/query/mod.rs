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
//! by type class first, puts missing fields with `null` and an empty array below them, and sorts
//! an array field by its smallest element ascending and its largest descending. Ties are broken
//! by `_id`, so every page is deterministic. Where MongoDB releases differ, the rule is MongoDB
//! 8.0's, the release Refold targets (see [`eval`] on `null` through arrays).

use std::cmp::Ordering;

use bson::{Bson, Document};
use serde_json::Value;

use eval::{lookup, op_matches};
use parse::{parse_filter, parse_sort};
use sort::{SortKey, compare_on, sort_key};

mod eval;
mod parse;
mod sort;

/// Documents returned when the query gives no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Most documents one query returns.
pub const MAX_LIMIT: usize = 1_000;
/// Deepest nesting of `$and`/`$or`/`$nor`.
const MAX_DEPTH: usize = 16;
/// Most values in one `$in`/`$nin`.
const MAX_IN: usize = 1_000;
/// Most conditions in one filter (each field condition, each `$and`/`$or`/`$nor`, each value
/// of an `$in`/`$nin`): the work of matching a document grows with it.
pub const MAX_CLAUSES: usize = 2_000;
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

impl Direction {
    /// An ascending comparison turned the way this direction sorts.
    fn apply(self, ordering: Ordering) -> Ordering {
        match self {
            Self::Ascending => ordering,
            Self::Descending => ordering.reverse(),
        }
    }
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
        let clauses = filter.clauses();
        if clauses > MAX_CLAUSES {
            return refuse(format!(
                "the filter has {clauses} conditions; at most {MAX_CLAUSES} are allowed"
            ));
        }
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

    /// Whether the query takes documents in `_id` order with no filter: a store can then read
    /// just the page it needs, in its id order.
    pub fn is_id_order_only(&self) -> bool {
        matches!(&self.filter, Filter::And(parts) if parts.is_empty()) && self.is_id_order()
    }

    /// Whether the query takes documents in `_id` order (the default): a store that reads
    /// them in that order may stop at the end of the page.
    pub fn is_id_order(&self) -> bool {
        self.sort_keys()
            .iter()
            .all(|(path, direction)| path == "_id" && *direction == Direction::Ascending)
    }

    /// Whether a document matches the filter.
    pub fn matches(&self, document: &Document) -> bool {
        self.filter.matches(document)
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
        self.sort_keys()
            .iter()
            .map(|(path, direction)| compare_on(a, b, path, *direction))
            .find(|ordering| *ordering != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering for MongoDB

impl Filter {
    /// How many conditions it holds (see [`MAX_CLAUSES`]).
    pub fn clauses(&self) -> usize {
        match self {
            Self::And(parts) | Self::Or(parts) | Self::Nor(parts) => {
                1 + parts.iter().map(Self::clauses).sum::<usize>()
            }
            Self::Field { ops, .. } => ops
                .iter()
                .map(|op| match op {
                    Op::In(values) | Op::Nin(values) => 1 + values.len(),
                    _ => 1,
                })
                .sum(),
        }
    }

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

/// Apply a query to documents in memory (the embedded store's evaluation): filter, sort, skip,
/// limit. Each item pairs a document's BSON form, for matching, with what is returned.
pub fn run<T>(query: &Query, documents: impl IntoIterator<Item = (Document, T)>) -> Vec<T> {
    let matching: Vec<(Document, T)> = documents
        .into_iter()
        .filter(|(document, _)| query.filter.matches(document))
        .collect();
    page(query, matching)
}

/// Sort documents that match a query and take its page (skip, limit).
pub fn page<T>(query: &Query, matching: Vec<(Document, T)>) -> Vec<T> {
    // Each document's keys once, not once per comparison.
    let sort = query.sort_keys();
    let mut order: Vec<(Vec<SortKey<'_>>, usize)> = matching
        .iter()
        .enumerate()
        .map(|(i, (document, _))| {
            let keys = sort
                .iter()
                .map(|(path, direction)| sort_key(document, path, *direction))
                .collect();
            (keys, i)
        })
        .collect();
    order.sort_by(|(a, _), (b, _)| {
        a.iter()
            .zip(b)
            .zip(&sort)
            .map(|((a, b), (_, direction))| direction.apply(a.cmp_key(b)))
            .find(|ordering| *ordering != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
    let page: Vec<usize> = order
        .into_iter()
        .skip(query.skip)
        .take(query.limit)
        .map(|(_, i)| i)
        .collect();
    let mut items: Vec<Option<T>> = matching.into_iter().map(|(_, item)| Some(item)).collect();
    page.into_iter().filter_map(|i| items[i].take()).collect()
}

#[cfg(test)]
mod tests;
