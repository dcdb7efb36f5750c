//! Property tests (proptest) over the parts that take arbitrary input from guests and clients:
//! the JSON and Extended JSON to BSON conversion, the update operators, and the query filter.
//! Each property runs 256 random cases by default; `PROPTEST_CASES=100000` makes a long run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release -p refold --lib properties
//! ```

use bson::Document;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::domain::extjson;
use crate::domain::query::{Filter, Query};
use crate::domain::update::{UpdateError, apply_update, update_from_map};

// ---------------------------------------------------------------------------------------------
// Generators

/// Extended JSON wrappers, well-formed or not.
fn extended() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        Just("2025-01-15T10:00:00Z".to_owned()),
        Just("2025-01-15T10:00:00.123+02:00".to_owned()),
        "[0-9]{1,20}",
        "-?[0-9]{1,4}\\.[0-9]{1,3}",
        "[0-9a-f]{24}",
        any::<String>(),
    ];
    let name = prop_oneof![
        Just("$date"),
        Just("$numberLong"),
        Just("$numberInt"),
        Just("$numberDouble"),
        Just("$numberDecimal"),
        Just("$oid"),
        Just("$regex"),
    ];
    let operand = prop_oneof![
        text.prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[0-9]{1,12}".prop_map(|n| json!({ "$numberLong": n })),
    ];
    (name, operand).prop_map(|(name, operand)| json!({ name: operand }))
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[xy]{0,2}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        extended(),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[abc]",
        "[abc]\\.[abc0]",
        "\\$[a-z]{1,8}",
        "_id",
        any::<String>(),
    ]
}

/// Any JSON value, with Extended JSON wrappers, `$` keys and dotted keys mixed in.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(key(), json_value(), 0..6).prop_map(|m| m.into_iter().collect())
}

/// Small values that collide often, for documents and filters over the same fields.
fn small() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..3).prop_map(Value::from),
        Just(json!(1.0)),
        Just(json!(1.5)),
        "[xy]".prop_map(Value::String),
        Just(json!({ "$date": "2025-01-01T00:00:00.000Z" })),
        Just(json!({ "$numberLong": "2" })),
    ];
    scalar.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map("[ab]", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn small_document() -> impl Strategy<Value = Document> {
    btree_map("[abc]", small(), 0..4)
        .prop_map(|m| extjson::to_document(&m.into_iter().collect()).expect("small values convert"))
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "[abc]",
        "[abc]\\.[ab]",
        "[abc]\\.[01]",
        "[abc]\\.[ab]\\.[ab]"
    ]
}

/// A filter over the fields of [`small_document`]: conditions and their combinations.
fn filter() -> impl Strategy<Value = Value> {
    let operator = prop_oneof![
        Just("$eq"),
        Just("$ne"),
        Just("$gt"),
        Just("$gte"),
        Just("$lt"),
        Just("$lte"),
    ];
    let condition = prop_oneof![
        small(),
        (operator, small()).prop_map(|(op, v)| json!({ op: v })),
        vec(small(), 0..3).prop_map(|vs| json!({ "$in": vs })),
        vec(small(), 0..3).prop_map(|vs| json!({ "$nin": vs })),
        any::<bool>().prop_map(|b| json!({ "$exists": b })),
        ((-2i64..3), (-2i64..3)).prop_map(|(a, b)| json!({ "$gte": a, "$lt": b })),
    ];
    let field = (path(), condition).prop_map(|(p, c)| json!({ p: c }));
    field.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 1..3).prop_map(|fs| json!({ "$and": fs })),
            vec(inner.clone(), 1..3).prop_map(|fs| json!({ "$or": fs })),
            vec(inner, 1..3).prop_map(|fs| json!({ "$nor": fs })),
        ]
    })
}

fn parsed(filter: &Value) -> Filter {
    Query::parse(Some(filter), None, None, None)
        .unwrap_or_else(|e| panic!("generated filter {filter} refused: {e}"))
        .filter
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    /// Any JSON converts or is refused with a message, never a panic; the check the embedded
    /// store runs on event payloads agrees with the conversion MongoDB's store runs; and what
    /// is read back is stable: writing it again and reading gives the same JSON. (Relaxed
    /// Extended JSON reads a small `$numberLong` back as a plain number, as mongosh does.)
    #[test]
    fn json_to_bson_is_total_consistent_and_stable(value in json_value()) {
        let converted = extjson::to_bson(&value);
        prop_assert_eq!(extjson::check(&value).is_ok(), converted.is_ok());
        if let Ok(bson) = converted {
            let read = extjson::to_json(&bson);
            let again = extjson::to_bson(&read).expect("what was read back converts");
            prop_assert_eq!(extjson::to_json(&again), read);
        }
    }

    /// A field path is what it always was: segments of ASCII letters, digits, `_` and `-`,
    /// joined by single dots, at most 256 bytes (the check now reads bytes, not segments).
    #[test]
    fn field_paths_are_dotted_identifiers(path in prop_oneof!["[a-c_.-]{0,8}", "[a-zA-Z0-9_.$é-]{0,12}", any::<String>()]) {
        let by_segment = !path.is_empty()
            && path.len() <= 256
            && path.split('.').all(|segment| {
                !segment.is_empty()
                    && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        prop_assert_eq!(crate::domain::manifest::is_field_path(&path), by_segment);
    }

    /// Arbitrary text given as a document, an update or a filter is refused cleanly.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), id in any::<String>()) {
        let _ = crate::domain::document::parse_document(&id, &text);
        let _ = crate::domain::update::parse_update(&text);
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            let _ = Query::parse(Some(&value), Some(&value), None, None);
        }
    }

    /// Any update on any document applies or is refused, never panics; an applied update
    /// leaves `_id` first and unchanged.
    #[test]
    fn updates_apply_or_are_refused(
        document in json_object(),
        fields in btree_map(key(), json_value(), 0..4),
        operator in prop_oneof![
            Just("$set".to_owned()), Just("$unset".to_owned()), Just("$inc".to_owned()),
            Just("$push".to_owned()), Just("$addToSet".to_owned()), Just("$pull".to_owned()),
            Just("$rename".to_owned()), "\\$?[a-z]{0,6}",
        ],
        upsert in any::<bool>(),
    ) {
        let update: Map<String, Value> =
            [(operator, Value::Object(fields.into_iter().collect()))].into_iter().collect();
        match update_from_map(update).and_then(|update| apply_update("doc-1", Some(document), &update, upsert)) {
            Ok(Some(after)) => prop_assert_eq!(after.iter().next(), Some((&"_id".to_owned(), &json!("doc-1")))),
            Ok(None) => prop_assert!(false, "an existing document disappeared"),
            Err(
                UpdateError::Malformed(_)
                | UpdateError::Operand(_)
                | UpdateError::UnknownOperator(_)
                | UpdateError::Mismatch { .. }
                | UpdateError::Value(_),
            ) => {}
        }
    }

    /// `$set` then reading the path gives the value; `$unset` removes it; setting twice is
    /// setting once; `$inc` adds within 64-bit integers and refuses to overflow.
    #[test]
    fn update_operators_mean_what_they_say(
        value in small(),
        a in any::<i64>(),
        b in any::<i64>(),
        field in "[abc]",
        nested in "[ab]",
    ) {
        let path = format!("{field}.{nested}");
        let update = |value: Value| match value {
            Value::Object(map) => update_from_map(map).expect("update"),
            _ => unreachable!("an object"),
        };
        let set = &update(json!({ "$set": { &path: value } }));
        let once = apply_update("d", None, set, true).expect("set").expect("document");
        prop_assert_eq!(&once[&field][&nested], &value);
        let twice = apply_update("d", Some(once.clone()), set, true).expect("set").expect("document");
        prop_assert_eq!(&twice, &once);
        let unset = update(json!({ "$unset": { &path: "" } }));
        let unset = apply_update("d", Some(once), &unset, true)
            .expect("unset")
            .expect("document");
        prop_assert!(unset[&field].get(&nested).is_none());

        let start = json!({ "_id": "d", "n": a });
        let inc = update(json!({ "$inc": { "n": b } }));
        let added = apply_update("d", start.as_object().cloned(), &inc, true);
        match a.checked_add(b) {
            Some(sum) => prop_assert_eq!(&added.expect("inc").expect("document")["n"], &json!(sum)),
            None => prop_assert!(added.is_err(), "{a} + {b} overflowed silently"),
        }
    }

    /// Any JSON given as a filter parses or is refused with a message, never a panic.
    #[test]
    fn any_filter_parses_or_is_refused(filter in json_value(), sort in json_value()) {
        let _ = Query::parse(Some(&filter), Some(&sort), Some(0), Some(10));
    }

    /// The filter sent to MongoDB means what the embedded store evaluates: rendering a parsed
    /// filter and parsing it again matches the same documents.
    #[test]
    fn rendered_filters_match_the_same_documents(
        filter in filter(),
        documents in vec(small_document(), 1..8),
    ) {
        let parsed = parsed(&filter);
        let rendered = Value::Object(extjson::to_map(&parsed.to_document()));
        let again = parsed_value(&rendered)?;
        for document in &documents {
            prop_assert_eq!(parsed.matches(document), again.matches(document), "{} / {} on {:?}", filter, rendered, document);
        }
    }

    /// The logical laws hold on any document: `$nor` negates, `$and` and `$or` combine,
    /// `$in` of one value is equality, `$ne` and `$nin` negate `$eq` and `$in`, and `$exists`
    /// false negates `$exists` true.
    #[test]
    fn filters_obey_the_logical_laws(
        f in filter(),
        g in filter(),
        p in path(),
        v in small(),
        vs in vec(small(), 0..3),
        document in small_document(),
    ) {
        let m = |filter: Value| parsed(&filter).matches(&document);
        let (a, b) = (m(f.clone()), m(g.clone()));
        prop_assert_eq!(m(json!({ "$nor": [f.clone()] })), !a);
        prop_assert_eq!(m(json!({ "$and": [f.clone(), g.clone()] })), a && b);
        prop_assert_eq!(m(json!({ "$or": [f, g] })), a || b);
        let eq = m(json!({ &p: { "$eq": v.clone() } }));
        prop_assert_eq!(m(json!({ &p: { "$in": [v.clone()] } })), eq);
        prop_assert_eq!(m(json!({ &p: { "$ne": v } })), !eq);
        prop_assert_eq!(m(json!({ &p: { "$nin": vs.clone() } })), !m(json!({ &p: { "$in": vs } })));
        prop_assert_eq!(m(json!({ &p: { "$exists": false } })), !m(json!({ &p: { "$exists": true } })));
    }
}

fn parsed_value(filter: &Value) -> Result<Filter, TestCaseError> {
    Query::parse(Some(filter), None, None, None)
        .map(|q| q.filter)
        .map_err(|e| TestCaseError::fail(format!("rendered filter {filter} refused: {e}")))
}
