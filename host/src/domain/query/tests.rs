//! The query language against hand-made documents: type classes, null and missing fields,
//! arrays, logical operators, refusals by name, sort order and the rendering sent to MongoDB.

use serde_json::json;

use super::*;
use crate::domain::extjson;

fn document(value: Value) -> Document {
    let Value::Object(map) = value else {
        unreachable!("test documents are objects")
    };
    extjson::to_document(&map).expect("document")
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
    let doc = json!({ "_id": "a", "n": 5, "s": "5", "d": { "$date": "2025-01-02T00:00:00.000Z" } });
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
    assert!(refused(json!({ "n": { "$function": {} } })).contains("`$function` is not allowed"));
    assert!(refused(json!({ "$expr": {} })).contains("`$expr` is not allowed"));
    assert!(refused(json!({ "n": { "$regex": "a" } })).contains("unsupported operator `$regex`"));
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

#[test]
fn filters_with_too_many_conditions_are_refused_by_count() {
    let wide: Vec<Value> = (0..MAX_CLAUSES).map(|i| json!({ "n": i })).collect();
    let message = refused(json!({ "$or": wide }));
    assert!(message.contains("conditions; at most 2000"), "{message}");
    let values: Vec<u64> = (0..1_000).collect();
    assert!(Query::parse(Some(&json!({ "n": { "$in": values } })), None, None, None).is_ok());
}

#[test]
fn only_an_unfiltered_query_in_id_order_is_read_by_page() {
    let parse = |filter: Value, sort: Value| {
        Query::parse(Some(&filter), Some(&sort), None, None).expect("query")
    };
    assert!(parse(json!({}), json!(null)).is_id_order_only());
    assert!(parse(json!(null), json!("_id")).is_id_order_only());
    assert!(!parse(json!({}), json!("-_id")).is_id_order_only());
    assert!(!parse(json!({}), json!("amount")).is_id_order_only());
    assert!(!parse(json!({ "a": 1 }), json!(null)).is_id_order_only());
}

/// The `_id`s of `docs` in the order a query with this sort returns them.
fn sorted(docs: &[Value], sort: &str) -> Vec<Value> {
    let query = Query::parse(None, Some(&json!(sort)), None, None).expect("query");
    run(
        &query,
        docs.iter().map(|d| (document(d.clone()), d["_id"].clone())),
    )
}

#[test]
fn an_empty_array_sorts_below_null_and_missing_fields() {
    // MongoDB's "Comparison/Sort Order": "considers the empty array as less than a null value
    // or a missing field value", ascending and descending alike.
    let docs = [
        json!({ "_id": "a", "v": 1 }),
        json!({ "_id": "b", "v": null }),
        json!({ "_id": "c", "v": [] }),
        json!({ "_id": "d" }),
        json!({ "_id": "e", "v": [[]] }),
    ];
    assert_eq!(sorted(&docs, "v"), ["c", "b", "d", "a", "e"]);
    assert_eq!(sorted(&docs, "-v"), ["e", "a", "b", "d", "c"]);
    // At the end of a dotted path too; an empty array in the middle of one is a missing field.
    let docs = [
        json!({ "_id": "a", "l": [] }),
        json!({ "_id": "b", "l": [{ "q": [] }] }),
        json!({ "_id": "c", "l": { "q": [] } }),
        json!({ "_id": "d", "l": [{ "q": 0 }] }),
    ];
    assert_eq!(sorted(&docs, "l.q"), ["b", "c", "a", "d"]);
    assert_eq!(sorted(&docs, "-l.q"), ["d", "a", "b", "c"]);
}

#[test]
fn a_path_through_an_array_sorts_its_missing_branches_as_null() {
    // The keys are an index's: each document element of the array gives its value on the rest
    // of the path, or null when it lacks the field; every other element gives null.
    let docs = [
        json!({ "_id": "a", "l": [{ "q": 1 }, {}] }),
        json!({ "_id": "b", "l": [{ "q": 0 }] }),
        json!({ "_id": "c", "l": [{ "q": 5 }, 7] }),
        json!({ "_id": "d", "l": [{ "q": 3 }, { "q": [9, 2] }] }),
    ];
    assert_eq!(sorted(&docs, "l.q"), ["a", "c", "b", "d"]);
    assert_eq!(sorted(&docs, "-l.q"), ["d", "c", "a", "b"]);
}

#[test]
fn an_element_named_by_its_index_is_not_expanded() {
    let docs = [
        json!({ "_id": "a", "v": [[5]] }),
        json!({ "_id": "b", "v": [7, 0] }),
        json!({ "_id": "c", "v": [] }),
    ];
    // `v.0` of `a` is the array `[5]`, which sorts after every number; `c` has no element 0.
    assert_eq!(sorted(&docs, "v.0"), ["c", "b", "a"]);
    assert!(!matches(json!({ "v.0": 5 }), docs[0].clone()));
    assert!(matches(json!({ "v.0": [5] }), docs[0].clone()));
    assert!(matches(json!({ "v": [5] }), docs[0].clone()));
    // Only canonical digits name an index.
    assert!(matches(json!({ "v.1": 0 }), docs[1].clone()));
    assert!(!matches(json!({ "v.01": 0 }), docs[1].clone()));
    assert!(!matches(json!({ "v.+1": 0 }), docs[1].clone()));
}

#[test]
fn null_through_an_array_needs_a_document_lacking_the_field() {
    // MongoDB 8.0 (the release Refold targets): an array in the middle of a path yields values
    // only through its documents (and an element named by its index); see eval::lookup.
    let null = json!({ "n.x": null });
    for n in [
        json!([]),
        json!([null]),
        json!([1, "s"]),
        json!([[]]),
        json!([[{}]]),
    ] {
        let doc = json!({ "_id": "a", "n": n });
        assert!(!matches(null.clone(), doc.clone()), "{doc}");
        assert!(
            matches(json!({ "n.x": { "$ne": null } }), doc.clone()),
            "{doc}"
        );
        assert!(
            !matches(json!({ "n.x": { "$in": [null, 1] } }), doc.clone()),
            "{doc}"
        );
        assert!(
            matches(json!({ "n.x": { "$nin": [null] } }), doc.clone()),
            "{doc}"
        );
        assert!(
            !matches(json!({ "n.x": { "$gte": null } }), doc.clone()),
            "{doc}"
        );
        assert!(matches(json!({ "n.x": { "$exists": false } }), doc), "{n}");
    }
    for n in [
        json!([{}]),
        json!([{ "x": 1 }, 5, {}]),
        json!([{ "x": null }]),
        json!(5),
        json!(null),
        json!({}),
    ] {
        assert!(matches(null.clone(), json!({ "_id": "a", "n": n })), "{n}");
    }
    assert!(matches(null.clone(), json!({ "_id": "a" })));
    // A scalar at the index a path goes through gives nothing either.
    assert!(!matches(
        json!({ "n.0.x": null }),
        json!({ "_id": "a", "n": [5] })
    ));
    assert!(matches(
        json!({ "n.0.x": null }),
        json!({ "_id": "a", "n": [{}] })
    ));
    assert!(!matches(
        json!({ "n.0": null }),
        json!({ "_id": "a", "n": [] })
    ));
}
