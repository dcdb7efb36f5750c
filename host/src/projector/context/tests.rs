//! The batch context's rules on their own: Extended JSON refused when written, reads bounded
//! per batch, the cache between batches bounded in bytes.

use serde_json::{Map, Value};

use super::*;
use crate::domain::Manifest;
use crate::store::StoreResult;

struct Empty;

impl DocumentReader for Empty {
    fn get(&mut self, _: &str, _: &str) -> StoreResult<Option<Map<String, Value>>> {
        Ok(None)
    }
}

fn context() -> BatchContext {
    BatchContext::new(&Manifest::new("p", 1, ["docs"]), Box::new(Empty))
}

/// What MongoDB cannot store is refused on every store, when the guest writes it, not at
/// commit (where MongoDB's store would retry it forever).
#[test]
fn malformed_extended_json_is_refused_when_written() {
    let mut context = context();
    let refused = context.update(
        "docs",
        "a",
        r#"{"$set": {"at": {"$date": "yesterday"}}}"#,
        true,
    );
    assert!(
        matches!(&refused, Err(CollectionFailure::InvalidUpdate(m)) if m.contains("invalid $date value")),
        "{refused:?}"
    );
    assert!(
        context
            .update("docs", "a", r#"{"$set": {"at": {"$date": -5}}}"#, true)
            .is_ok()
    );
    let refused = context.put("docs", "b", r#"{"n": [{"$numberLong": "1.5"}]}"#);
    assert!(
        matches!(&refused, Err(CollectionFailure::InvalidDocument(m)) if m.starts_with("`n`: invalid $numberLong")),
        "{refused:?}"
    );
}

/// `depth` levels of nested objects, as JSON text: `{"a": {"a": ... 1}}`.
fn nested(depth: usize) -> String {
    format!("{}1{}", r#"{"a": "#.repeat(depth), "}".repeat(depth))
}

/// What BSON cannot hold and mongod refuses to store is refused on every store when written:
/// a NUL in a field name, a document nesting deeper than 100 levels (also through an update).
#[test]
fn field_names_with_nul_and_deep_nesting_are_refused_when_written() {
    let mut context = context();
    let refused = context.put("docs", "a", r#"{"x": {"b\u0000c": 1}}"#);
    assert!(
        matches!(&refused, Err(CollectionFailure::InvalidDocument(m)) if m.contains("NUL")),
        "{refused:?}"
    );
    let refused = context.update("docs", "a", r#"{"$set": {"x": {"\u0000": 1}}}"#, true);
    assert!(
        matches!(&refused, Err(CollectionFailure::InvalidUpdate(m)) if m.contains("NUL")),
        "{refused:?}"
    );
    // The document is level 1: a field holding 99 nested objects makes 100 levels.
    assert!(
        context
            .put("docs", "a", &format!(r#"{{"x": {}}}"#, nested(99)))
            .is_ok()
    );
    let refused = context.put("docs", "a", &format!(r#"{{"x": {}}}"#, nested(100)));
    assert!(
        matches!(&refused, Err(CollectionFailure::InvalidDocument(m)) if m.contains("deeper than 100")),
        "{refused:?}"
    );
    let deep = format!(r#"{{"$set": {{"p.q": {}}}}}"#, nested(99));
    assert!(matches!(
        context.update("docs", "b", &deep, true),
        Err(CollectionFailure::InvalidUpdate(_))
    ));
}

/// A unique index compares one value per document, alike on both stores: a document whose
/// unique key holds an array, a document or an Extended JSON wrapper, or whose key's path
/// crosses an array, is refused; other collections and other fields may hold them.
#[test]
fn a_unique_key_must_be_one_string_number_or_boolean() {
    let mut manifest = Manifest::new("p", 1, ["docs", "users"]);
    manifest.collections[1]
        .indexes
        .push(crate::domain::IndexSpec::unique(
            "by_email",
            &["contact.email"],
        ));
    let mut context = BatchContext::new(&manifest, Box::new(Empty));
    for document in [
        r#"{"contact": {"email": ["a", "b"]}}"#,
        r#"{"contact": [{"email": "a"}]}"#,
        r#"{"contact": {"email": {"$numberLong": "5"}}}"#,
        r#"{"contact": {"email": {"$date": "2025-01-01T00:00:00Z"}}}"#,
        r#"{"contact": {"email": {"at": "a"}}}"#,
    ] {
        let refused = context.put("users", "u", document);
        assert!(
            matches!(&refused, Err(CollectionFailure::InvalidDocument(m)) if m.contains("by_email")),
            "{document}: {refused:?}"
        );
    }
    for key in ["5", "2.5", "true", "null", "\"x\""] {
        let document = format!(r#"{{"contact": {{"email": {key}}}}}"#);
        assert!(context.put("users", "w", &document).is_ok(), "{document}");
    }
    assert!(context.put("users", "w", r#"{"contact": {}}"#).is_ok());
    let refused = context.update("users", "v", r#"{"$push": {"contact.email": "a"}}"#, true);
    assert!(
        matches!(&refused, Err(CollectionFailure::InvalidDocument(_))),
        "{refused:?}"
    );
    assert!(
        context
            .put(
                "users",
                "u",
                r#"{"contact": {"email": "a"}, "tags": [1, 2]}"#
            )
            .is_ok()
    );
    assert!(
        context
            .put("docs", "d", r#"{"contact": {"email": ["a"]}}"#)
            .is_ok()
    );
}

/// A reader that counts its reads: of documents that all exist, each padded with `pad` bytes,
/// or (`pad` none) of collections that hold none of the documents asked for, and are `empty` or
/// not.
struct Counted {
    pad: Option<usize>,
    empty: bool,
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Counted {
    /// A reader of documents that all exist, each padded with `bytes`.
    fn everything(bytes: usize, reads: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        Self {
            pad: Some(bytes),
            empty: false,
            reads: std::sync::Arc::clone(reads),
        }
    }
}

impl DocumentReader for Counted {
    fn get(&mut self, _: &str, id: &str) -> StoreResult<Option<Map<String, Value>>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.pad.map(|bytes| {
            let mut document = Map::new();
            document.insert("_id".into(), Value::String(id.into()));
            document.insert("pad".into(), Value::String("x".repeat(bytes)));
            document
        }))
    }

    fn is_empty(&mut self) -> StoreResult<bool> {
        Ok(self.empty)
    }
}

/// A guest that reads without bound fails its batch (as its own failure) instead of filling
/// the host's memory with what it read; misses count like hits.
#[test]
fn reads_are_bounded_per_batch_in_documents_and_bytes() {
    let mut context = context();
    for i in 0..MAX_READS_PER_BATCH {
        assert_eq!(context.get("docs", &format!("id-{i}")), Ok(None));
    }
    let refused = context.get("docs", "one-more");
    assert!(
        matches!(&refused, Err(CollectionFailure::LimitExceeded(m)) if m.contains("documents")),
        "{refused:?}"
    );
    assert!(
        context.violation().is_some(),
        "the batch fails as the guest's"
    );
    // The next batch starts counting again.
    context.discard();
    assert_eq!(context.get("docs", "again"), Ok(None));

    let reader = Counted::everything(1024 * 1024, &Default::default());
    let mut context = BatchContext::new(&Manifest::new("p", 1, ["docs"]), Box::new(reader));
    let mut refused = None;
    for i in 0..(MAX_READ_BYTES_PER_BATCH / (1024 * 1024) + 1) {
        if let Err(failure) = context.get("docs", &format!("id-{i}")) {
            refused = Some(failure);
            break;
        }
    }
    assert!(
        matches!(&refused, Some(CollectionFailure::LimitExceeded(m)) if m.contains("bytes")),
        "{refused:?}"
    );
}

/// What stays cached between batches is bounded in bytes, not only in documents: large
/// documents read in one batch are read from the store again in the next.
#[test]
fn the_cache_between_batches_is_bounded_in_bytes() {
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = Counted::everything(1024 * 1024, &reads);
    let mut context = BatchContext::new(&Manifest::new("p", 1, ["docs"]), Box::new(reader));
    let count = || reads.load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..8 {
        assert!(context.get("docs", &format!("small-{i}")).is_ok());
    }
    context.take_writes();
    assert!(context.get("docs", "small-0").is_ok());
    assert_eq!(count(), 8, "a small cache is kept between batches");
    for batch in 0..2 {
        for i in 0..200 {
            assert!(context.get("docs", &format!("big-{batch}-{i}")).is_ok());
        }
        context.take_writes();
    }
    let before = count();
    assert!(context.get("docs", "big-0-0").is_ok());
    assert_eq!(count(), before + 1, "400 MiB of documents were not kept");
}

/// `update-fields` given the operators of a JSON update, in the order `update` applies them,
/// answers what `update` answers and leaves the same document, byte for byte; what `update`
/// refuses it refuses.
#[test]
fn typed_updates_equal_json_updates() {
    let start = r#"{"n": 1, "s": "x", "o": {"a": 1}, "l": [1, 2]}"#;
    let updates = [
        r#"{"$set": {"o.b": 2, "t": true, "at": {"$date": "2024-12-19T10:00:00.000Z"}}, "$inc": {"n": 2, "o.a": 1}}"#,
        r#"{"$push": {"l": {"k": [1, "v"]}}, "$unset": {"s": 1}, "$pull": {"m": 1}}"#,
        r#"{"$addToSet": {"l": 2}, "$inc": {"f": 0.1}}"#,
        r#"{"$set": {"o": 5}, "$inc": {"o.a": 1}}"#,
        r#"{"$inc": {"s": 1}}"#,
        r#"{"$inc": {"n": 9223372036854775807}}"#,
        r#"{"$set": {"n.x": 1}}"#,
        r#"{"$set": {"_id": "other"}}"#,
        r#"{"$set": {"a..b": 1}}"#,
        r#"{"$inc": {"n": "1"}}"#,
        r#"{"$set": {"at": {"$date": "yesterday"}}}"#,
    ];
    for update in updates {
        let mut by_json = context();
        by_json.put("docs", "d", start).expect("put");
        let json = by_json.update("docs", "d", update, false);
        let fields = match serde_json::from_str(update) {
            Ok(Value::Object(map)) => map
                .into_iter()
                .flat_map(|(operator, fields)| {
                    let operator = update::Operator::from_name(&operator).expect("operator");
                    let Value::Object(fields) = fields else {
                        unreachable!("{update}")
                    };
                    fields.into_iter().map(move |(path, value)| FieldUpdate {
                        operator,
                        path,
                        value,
                    })
                })
                .collect(),
            _ => unreachable!("{update}"),
        };
        let mut typed = context();
        typed.put("docs", "d", start).expect("put");
        let fields = typed.update_fields("docs", "d", fields, false);
        assert_eq!(fields, json, "{update}");
        assert_eq!(
            typed.get("docs", "d").expect("get"),
            by_json.get("docs", "d").expect("get"),
            "{update}"
        );
    }
    let mut context = context();
    assert!(
        matches!(
            context.update_fields("docs", "d", Vec::new(), true),
            Err(CollectionFailure::InvalidUpdate(m)) if m.contains("no operator")
        ),
        "an empty list is refused as `{{}}` is"
    );
    assert!(matches!(
        context.update_fields("nope", "d", Vec::new(), true),
        Err(CollectionFailure::UnknownCollection(_))
    ));
}

/// An update without upsert of a document that does not exist does nothing whatever its
/// operators, as `update` always did; with the document there, or with upsert, the operators
/// are refused. A malformed text or a value no store keeps is refused whatever.
#[test]
fn operators_are_looked_at_only_for_a_document_they_apply_to() {
    let faulty = [
        r#"{"$where": {"a": 1}}"#,
        r#"{"$set": {"a..b": 1}}"#,
        r#"{"$set": {"_id": "x"}}"#,
        r#"{"$inc": {"n": "1"}}"#,
        r#"{"$set": 5}"#,
    ];
    for update in faulty {
        let mut context = context();
        assert_eq!(
            context.update("docs", "gone", update, false),
            Ok(false),
            "{update}"
        );
        assert!(
            matches!(
                context.update("docs", "gone", update, true),
                Err(CollectionFailure::InvalidUpdate(_))
            ),
            "{update}"
        );
        context.put("docs", "here", "{}").expect("put");
        assert!(
            matches!(
                context.update("docs", "here", update, false),
                Err(CollectionFailure::InvalidUpdate(_))
            ),
            "{update}"
        );
    }
    for update in ["[1]", "{}", r#"{"$set": {"at": {"$date": "yesterday"}}}"#] {
        let mut context = context();
        assert!(
            matches!(
                context.update("docs", "gone", update, false),
                Err(CollectionFailure::InvalidUpdate(_))
            ),
            "{update}"
        );
    }
}

/// An update applied where the document is gives what a copy gives; one whose operators touch
/// the same field, or that does not apply, leaves the document as it was.
#[test]
fn updates_in_place_equal_updates_on_a_copy() {
    let start = r#"{"n": 1, "s": "x", "o": {"a": 1}, "l": [1, 2]}"#;
    let cases = [
        (
            r#"{"$set": {"o.b": 2, "t": true}, "$inc": {"n": 2, "o.a": 1}}"#,
            true,
        ),
        (
            r#"{"$push": {"l": 3}, "$unset": {"s": 1}, "$pull": {"m": 1}}"#,
            true,
        ),
        (r#"{"$set": {"o": 5}, "$inc": {"o.a": 1}}"#, false),
        (r#"{"$inc": {"s": 1}}"#, false),
        (r#"{"$set": {"n.x": 1}}"#, false),
        (r#"{"$push": {"n": 1}}"#, false),
        (r#"{"$inc": {"n": 9223372036854775807}}"#, false),
        (
            r#"{"$set": {"z": 1, "n": null, "a.b": 2}, "$inc": {"m": 1.5, "k": 2}}"#,
            true,
        ),
        (r#"{"$setOnInsert": {"n": 1}}"#, false),
    ];
    for (update, in_place) in cases {
        let doc = document::parse_document("d", start).expect("document");
        let Ok(parsed) = update::parse_update(update) else {
            // Refused before any document is looked at: by the context too.
            assert!(!in_place, "{update}");
            let mut context = context();
            context.put("docs", "d", start).expect("put");
            assert!(
                context.update("docs", "d", update, true).is_err(),
                "{update}"
            );
            continue;
        };
        assert_eq!(
            update::applies_in_place(&doc, &parsed),
            in_place,
            "{update}"
        );
        let mut context = context();
        context.put("docs", "d", start).expect("put");
        let result = context.update("docs", "d", update, true).map(drop);
        let copied = update::apply_update("d", Some(doc), &parsed, true);
        assert_eq!(result.is_ok(), copied.is_ok(), "{update}");
        let expected = copied
            .ok()
            .flatten()
            .unwrap_or_else(|| document::parse_document("d", start).expect("document"));
        let held = context.get("docs", "d").expect("get").expect("document");
        assert_eq!(
            serde_json::from_str::<Value>(&held).expect("json"),
            Value::Object(expected),
            "{update}"
        );
        // A document the update creates is the same, field for field and in the same order.
        let mut fresh = super::tests::context();
        let result = fresh.update("docs", "new", update, true).map(drop);
        let created = update::apply_update("new", None, &parsed, true);
        assert_eq!(result.is_ok(), created.is_ok(), "{update}");
        let held = fresh.get("docs", "new").expect("get");
        let expected = created.ok().flatten().map(|d| serde_json::to_string(&d));
        assert_eq!(held, expected.transpose().expect("json"), "{update}");
    }
}

/// On collections that were empty when the context first missed its cache, a document the
/// context never wrote is not read: it cannot exist. One it wrote is read once the cache lost
/// it (here, a failed batch), and collections that held documents are read as before.
#[test]
fn documents_never_written_to_empty_collections_are_not_read() {
    let counted = |empty| {
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = Counted {
            pad: None,
            empty,
            reads: std::sync::Arc::clone(&reads),
        };
        let manifest = Manifest::new("p", 1, ["docs"]);
        (BatchContext::new(&manifest, Box::new(reader)), reads)
    };
    let reads_of =
        |reads: &std::sync::atomic::AtomicUsize| reads.load(std::sync::atomic::Ordering::Relaxed);
    let inc = r#"{"$inc": {"n": 1}}"#;

    let (mut context, reads) = counted(true);
    for id in ["a", "b", "c"] {
        assert_eq!(context.update("docs", id, inc, true), Ok(true));
    }
    assert_eq!(context.get("docs", "d"), Ok(None));
    assert_eq!(reads_of(&reads), 0);
    context.discard();
    // `a` was written (in a batch that failed, so perhaps by a commit before): it is read.
    assert_eq!(context.get("docs", "a"), Ok(None));
    assert_eq!(context.get("docs", "e"), Ok(None));
    assert_eq!(reads_of(&reads), 1);
    // At the head the context stops keeping track, and reads what it misses.
    context.release_cache();
    assert_eq!(context.get("docs", "f"), Ok(None));
    assert_eq!(reads_of(&reads), 2);

    let (mut context, reads) = counted(false);
    assert_eq!(context.update("docs", "a", inc, true), Ok(true));
    assert_eq!(context.get("docs", "b"), Ok(None));
    assert_eq!(reads_of(&reads), 2);
}

/// What the handler keeps for its next call stays across the calls of a batch and goes with the
/// batch: at its commit and when it is discarded.
#[test]
fn a_kept_instance_lives_for_the_calls_of_one_batch() {
    let mut context = context();
    context.keep_instance(Box::new(1u8));
    context.end_call(1);
    assert!(context.take_instance().is_some());

    context.keep_instance(Box::new(2u8));
    let _ = context.take_writes();
    assert!(context.take_instance().is_none());

    context.keep_instance(Box::new(3u8));
    context.discard();
    assert!(context.take_instance().is_none());
}
