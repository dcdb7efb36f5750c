//! Random documents, filters and sorts for the differential test, from small value domains so
//! that values collide, tie and cross type classes often.
//!
//! Documents hold numbers (integers, doubles, a long), strings, `null`, missing fields, booleans,
//! dates, arrays (empty, of scalars, of documents with and without the field, nested) and
//! embedded documents. Filters use every documented operator on plain and dotted paths, through
//! arrays and array indexes, combined with `$and`, `$or` and `$nor`. Sorts take one or two keys
//! in either direction; only the first may reach an array, because MongoDB refuses to sort by
//! two arrays of one document ("cannot sort with keys that are parallel arrays").

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

/// Paths a filter tests.
const FILTER_PATHS: [&str; 18] = [
    "n",
    "n.x",
    "n.0",
    "s",
    "tags",
    "tags.0",
    "tags.1",
    "lines",
    "lines.sku",
    "lines.qty",
    "lines.0.qty",
    "lines.1.sku",
    "meta",
    "meta.k",
    "meta.x",
    "when",
    "missing",
    "missing.x",
];
/// Paths the first sort key takes.
const SORT_PATHS: [&str; 12] = [
    "n",
    "n.x",
    "s",
    "tags",
    "tags.0",
    "lines.qty",
    "lines.sku",
    "lines.0.qty",
    "meta.k",
    "meta.x",
    "when",
    "missing",
];
/// Paths that never reach an array in a generated document: the second sort key's.
const ARRAY_FREE_PATHS: [&str; 4] = ["s", "meta.k", "when", "missing"];

const DATES: [&str; 2] = ["2025-01-01T00:00:00.000Z", "2025-06-01T12:00:00.000Z"];

/// One query: a filter, a sort as text (`-a,b`), a skip and a limit.
#[derive(Debug, Clone)]
pub struct Case {
    pub filter: Value,
    pub sort: String,
    pub skip: u64,
    pub limit: u64,
}

/// `count` documents with ids `d00`, `d01`, ... (their byte order is their number order). In a
/// *tidy* set an array of documents never has an element without the field a path asks for
/// (its documents all hold `sku` and `qty`, and it holds no scalars): sorts through such arrays
/// can be compared with SecantusDB too (see `secantus.rs`).
pub fn documents(rng: &mut StdRng, count: usize, tidy: bool) -> Vec<Value> {
    (0..count)
        .map(|i| document(rng, format!("d{i:02}"), tidy))
        .collect()
}

fn document(rng: &mut StdRng, id: String, tidy: bool) -> Value {
    let any_value = |rng: &mut StdRng| any_value(rng, tidy);
    let lines = |rng: &mut StdRng| lines(rng, tidy);
    let mut doc = Map::new();
    doc.insert("_id".into(), json!(id));
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            doc.insert(name.into(), value);
        }
    };
    put("n", maybe(rng, 0.85, any_value));
    put(
        "s",
        maybe(rng, 0.8, |rng| match rng.random_range(0..10) {
            0 => Value::Null,
            1 => number(rng),
            _ => string(rng),
        }),
    );
    put(
        "tags",
        maybe(rng, 0.8, |rng| match rng.random_range(0..8) {
            0 => json!([]),
            1 => json!([null]),
            2 => string(rng),
            _ => Value::Array((0..rng.random_range(1..4)).map(|_| string(rng)).collect()),
        }),
    );
    put("lines", maybe(rng, 0.8, lines));
    put(
        "meta",
        maybe(rng, 0.8, |rng| match rng.random_range(0..8) {
            0 => Value::Null,
            1 => number(rng),
            _ => {
                let mut meta = Map::new();
                if rng.random_bool(0.8) {
                    meta.insert("k".into(), scalar(rng));
                }
                if rng.random_bool(0.6) {
                    meta.insert("x".into(), any_value(rng));
                }
                Value::Object(meta)
            }
        }),
    );
    put(
        "when",
        maybe(rng, 0.7, |rng| match rng.random_range(0..6) {
            0 => Value::Null,
            1 => string(rng),
            _ => date(rng),
        }),
    );
    Value::Object(doc)
}

fn maybe(rng: &mut StdRng, p: f64, value: impl FnOnce(&mut StdRng) -> Value) -> Option<Value> {
    rng.random_bool(p).then(|| value(rng))
}

fn number(rng: &mut StdRng) -> Value {
    match rng.random_range(0..9) {
        0 => json!(2.5),
        1 => json!(2.0),
        2 => json!({ "$numberLong": "2" }),
        3 => json!(-1),
        4 => json!(10),
        _ => json!(rng.random_range(0..3)),
    }
}

fn string(rng: &mut StdRng) -> Value {
    json!(*["", "a", "ab", "b", "2"].choose(rng).expect("strings"))
}

fn date(rng: &mut StdRng) -> Value {
    json!({ "$date": *DATES.choose(rng).expect("dates") })
}

/// A value that is not an array or a document.
fn scalar(rng: &mut StdRng) -> Value {
    match rng.random_range(0..12) {
        0 | 1 => Value::Null,
        2 => json!(rng.random_bool(0.5)),
        3 => date(rng),
        4..=7 => number(rng),
        _ => string(rng),
    }
}

/// Any value: mostly scalars, also arrays (empty, of scalars, mixed with documents, nested) and
/// documents.
fn any_value(rng: &mut StdRng, tidy: bool) -> Value {
    match rng.random_range(0..20) {
        0 => json!([]),
        1 => json!([null]),
        2..=4 => Value::Array((0..rng.random_range(1..4)).map(|_| scalar(rng)).collect()),
        5 if tidy => json!([{ "x": scalar(rng) }, { "x": scalar(rng) }]),
        5 => json!([{ "x": scalar(rng) }, {}, scalar(rng)]),
        6 => json!([[scalar(rng)], scalar(rng)]),
        7 => json!({}),
        8 | 9 => json!({ "x": scalar(rng) }),
        10 => json!({ "x": [scalar(rng), scalar(rng)] }),
        _ => scalar(rng),
    }
}

/// An order's lines: mostly an array of documents with or without `sku` and `qty`; sometimes
/// empty, with a scalar element, or a single document.
fn lines(rng: &mut StdRng, tidy: bool) -> Value {
    let line = |rng: &mut StdRng| {
        let mut line = Map::new();
        if tidy || rng.random_bool(0.7) {
            line.insert("sku".into(), string(rng));
        }
        if tidy || rng.random_bool(0.7) {
            line.insert(
                "qty".into(),
                if rng.random_bool(0.85) {
                    number(rng)
                } else {
                    scalar(rng)
                },
            );
        }
        Value::Object(line)
    };
    match rng.random_range(0..10) {
        0 => json!([]),
        1 => line(rng),
        2 if !tidy => json!([line(rng), scalar(rng)]),
        _ => Value::Array((0..rng.random_range(1..4)).map(|_| line(rng)).collect()),
    }
}

/// A random query.
pub fn case(rng: &mut StdRng) -> Case {
    let filter = if rng.random_bool(0.1) {
        json!({})
    } else {
        filter(rng, 0)
    };
    let mut keys = Vec::new();
    if rng.random_bool(0.75) {
        keys.push(*SORT_PATHS.choose(rng).expect("paths"));
        if rng.random_bool(0.3) {
            let second = *ARRAY_FREE_PATHS.choose(rng).expect("paths");
            if !keys.contains(&second) {
                keys.push(second);
            }
        }
    }
    let sort = keys
        .iter()
        .map(|k| {
            if rng.random_bool(0.5) {
                format!("-{k}")
            } else {
                (*k).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let skip = if rng.random_bool(0.15) {
        rng.random_range(1..6)
    } else {
        0
    };
    let limit = if rng.random_bool(0.15) {
        rng.random_range(1..10)
    } else {
        1_000
    };
    Case {
        filter,
        sort,
        skip,
        limit,
    }
}

fn filter(rng: &mut StdRng, depth: usize) -> Value {
    let logical = depth < 2 && rng.random_bool(0.3);
    if !logical {
        let mut fields = Map::new();
        for _ in 0..rng.random_range(1..3) {
            let path = *FILTER_PATHS.choose(rng).expect("paths");
            fields.insert(path.into(), condition(rng));
        }
        return Value::Object(fields);
    }
    let operator = *["$and", "$or", "$nor"].choose(rng).expect("operators");
    let parts: Vec<Value> = (0..rng.random_range(1..4))
        .map(|_| filter(rng, depth + 1))
        .collect();
    json!({ operator: parts })
}

/// A field's condition: a value (equality), or one or two operators.
fn condition(rng: &mut StdRng) -> Value {
    if rng.random_bool(0.25) {
        return operand(rng);
    }
    let mut ops = Map::new();
    for _ in 0..rng.random_range(1..3) {
        let (name, value) = match rng.random_range(0..11) {
            0 => ("$eq", operand(rng)),
            1 => ("$ne", operand(rng)),
            2 => ("$gt", comparand(rng)),
            3 => ("$gte", comparand(rng)),
            4 => ("$lt", comparand(rng)),
            5 => ("$lte", comparand(rng)),
            6 | 7 => ("$in", list(rng)),
            8 => ("$nin", list(rng)),
            _ => ("$exists", json!(rng.random_bool(0.5))),
        };
        ops.insert(name.into(), value);
    }
    Value::Object(ops)
}

/// A value to compare for equality: mostly a scalar (`null` often), sometimes an array or a
/// document.
fn operand(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 | 1 => Value::Null,
        2 => json!([]),
        3 => Value::Array((0..rng.random_range(1..3)).map(|_| scalar(rng)).collect()),
        4 => json!({ "x": scalar(rng) }),
        5 => json!({}),
        _ => scalar(rng),
    }
}

/// A value for `$gt` and its kind: a scalar, rarely `null` or an array.
fn comparand(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!([scalar(rng)]),
        _ => scalar(rng),
    }
}

fn list(rng: &mut StdRng) -> Value {
    Value::Array((0..rng.random_range(1..4)).map(|_| operand(rng)).collect())
}
