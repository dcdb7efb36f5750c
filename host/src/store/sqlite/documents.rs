//! Served reads on SQLite: the active generation's documents through the stable names (views).
//! Queries are evaluated by the domain's query engine ([`crate::domain::query`]) on the
//! documents' BSON form, so both stores answer alike.

use std::time::Instant;

use async_trait::async_trait;
use bson::Bson;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::fields::{json_path, unique_first_key, unique_kind};
use super::{SqliteStore, quoted};
use crate::domain::generation::stable_name;
use crate::domain::manifest::is_field_path;
use crate::domain::query::{Filter, Op};
use crate::domain::{extjson, query};
use crate::store::{Documents, Query, StoreError, StoreResult};

fn parse_body(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Whether a stable name (view) exists yet: before a projection's first cut-over it does not.
fn view_exists(conn: &Connection, view: &str) -> StoreResult<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?1",
        [view],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(|e| StoreError::backend("look up view", e))
}

/// The table behind a stable name (a view `SELECT id, body FROM "<table>"`).
fn table_of(conn: &Connection, view: &str) -> StoreResult<Option<String>> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?1",
            [view],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| StoreError::backend("look up view", e))?;
    Ok(sql.and_then(|sql| {
        let table = sql.rsplit("FROM ").next()?.trim().trim_end_matches(';');
        Some(table.trim_matches('"').to_owned())
    }))
}

/// A condition SQLite can answer from a unique index, narrowing the documents a query reads:
/// equality to strings or to numbers (`{"email": "..."}`, `$eq`, `$in` of strings or of
/// numbers) at the top of the filter, on
/// the first key of a unique index with a kind column (those made since unique keys may not
/// hold or cross an array, which the host refuses when a document is written). Every document
/// it leaves out fails that condition, so the filter, still evaluated whole on the documents it
/// keeps, gives the same answer as a scan. The condition and its values.
fn unique_prefilter(
    conn: &Connection,
    view: &str,
    query: &Query,
) -> StoreResult<Option<(String, Vec<SqlValue>)>> {
    let Filter::And(parts) = &query.filter else {
        return Ok(None);
    };
    let conditions: Vec<(&str, &str, Vec<SqlValue>)> = parts
        .iter()
        .filter_map(|part| match part {
            Filter::Field { path, ops } if is_field_path(path) => ops
                .iter()
                .find_map(equal_values)
                .map(|(kind, values)| (path.as_str(), kind, values)),
            _ => None,
        })
        .collect();
    if conditions.is_empty() {
        return Ok(None);
    }
    let Some(table) = table_of(conn, view)? else {
        return Ok(None);
    };
    let indexes: Vec<String> = conn
        .prepare_cached(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql LIKE 'CREATE UNIQUE INDEX%'",
        )
        .and_then(|mut s| s.query_map([&table], |r| r.get(0))?.collect())
        .map_err(|e| StoreError::backend("look up indexes", e))?;
    Ok(conditions.into_iter().find_map(|(path, kind, values)| {
        let path = json_path(path);
        let first_key = unique_first_key(&path);
        indexes.iter().any(|sql| sql.contains(&first_key)).then(|| {
            let placeholders = vec!["?"; values.len()].join(", ");
            let condition = format!(
                "{} = '{kind}' AND json_extract(body, {path}) IN ({placeholders})",
                unique_kind(&path)
            );
            (condition, values)
        })
    }))
}

/// The values a condition asks a field to equal, when they are all strings or all numbers:
/// their kind in a unique index ([`unique_kind`]) and the values as SQLite holds them.
fn equal_values(op: &Op) -> Option<(&'static str, Vec<SqlValue>)> {
    let values = match op {
        Op::Eq(value) => std::slice::from_ref(value),
        Op::In(values) if !values.is_empty() => values.as_slice(),
        _ => return None,
    };
    let kind = match values.first()? {
        Bson::String(_) => "s",
        _ => "n",
    };
    let converted = values
        .iter()
        .map(|value| match (kind, value) {
            ("s", Bson::String(text)) => Some(SqlValue::Text(text.clone())),
            ("n", Bson::Int32(n)) => Some(SqlValue::Integer(i64::from(*n))),
            ("n", Bson::Int64(n)) => Some(SqlValue::Integer(*n)),
            ("n", Bson::Double(x)) if x.is_finite() => Some(SqlValue::Real(*x)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((kind, converted))
}

#[async_trait]
impl Documents for SqliteStore {
    async fn get_document(
        &self,
        projection: &str,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Value>> {
        let view = stable_name(projection, collection);
        let id = id.to_owned();
        self.with_reader(move |conn| {
            if !view_exists(conn, &view)? {
                return Err(StoreError::NotFound(format!("collection {view}")));
            }
            conn.query_row(
                &format!("SELECT body FROM {} WHERE id = ?1", quoted(&view)),
                [&id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|b| b.map(parse_body))
            .map_err(|e| StoreError::backend(format!("read {view}/{id}"), e))
        })
        .await
    }

    async fn find_documents(
        &self,
        projection: &str,
        collection: &str,
        query: &Query,
    ) -> StoreResult<Vec<Value>> {
        let view = stable_name(projection, collection);
        let query = query.clone();
        let budget = self.query_budget;
        self.with_reader(move |conn| {
            if !view_exists(conn, &view)? {
                return Err(StoreError::NotFound(format!("collection {view}")));
            }
            let failed = |e| StoreError::backend(format!("query {view}"), e);
            // No filter, id order: SQLite reads the page alone (its text order is MongoDB's
            // order of string ids, byte by byte). A filter in id order reads in that order
            // and stops at the end of the page. Anything else is matched and sorted here.
            let paged = query.is_id_order_only();
            let in_id_order = query.is_id_order();
            let prefilter = match paged {
                true => None,
                false => unique_prefilter(conn, &view, &query)?,
            };
            let (condition, values) = prefilter.unwrap_or_default();
            let sql = format!(
                "SELECT id, body FROM {}{}{}{}",
                quoted(&view),
                if condition.is_empty() { "" } else { " WHERE " },
                condition,
                match (paged, in_id_order) {
                    (true, _) => " ORDER BY id LIMIT ? OFFSET ?",
                    (false, true) => " ORDER BY id",
                    (false, false) => "",
                }
            );
            let mut stmt = conn.prepare(&sql).map_err(failed)?;
            let mut rows = match paged {
                true => stmt.query(params![
                    query.limit as i64,
                    i64::try_from(query.skip).unwrap_or(i64::MAX)
                ]),
                false => stmt.query(rusqlite::params_from_iter(&values)),
            }
            .map_err(failed)?;
            let started = Instant::now();
            let page_end = query.skip.saturating_add(query.limit);
            let (mut scanned, mut matching) = (0usize, Vec::new());
            while let Some(row) = rows.next().map_err(failed)? {
                scanned += 1;
                if scanned % 1024 == 0 && started.elapsed() > budget.time {
                    return Err(StoreError::OverBudget {
                        transient: true,
                        message: format!(
                            "the query of {view} ran past {:?} after scanning {scanned} documents: the embedded store matches documents one by one; narrow the filter, or serve this read model from MongoDB",
                            budget.time
                        ),
                    });
                }
                let id: String = row.get(0).map_err(failed)?;
                let body = parse_body(row.get(1).map_err(failed)?);
                let Value::Object(map) = &body else {
                    continue;
                };
                let document = match extjson::to_document(map) {
                    Ok(document) => document,
                    Err(error) => {
                        tracing::warn!(collection = %view, %id, %error, "document left out of a query: it is not valid Extended JSON");
                        continue;
                    }
                };
                if paged {
                    matching.push((document, body));
                    continue;
                }
                if !query.matches(&document) {
                    continue;
                }
                matching.push((document, body));
                if in_id_order && matching.len() >= page_end {
                    break;
                }
                if matching.len() > budget.sorted {
                    let advice = match in_id_order {
                        true => "skip passes over too many: page by a filter on _id instead",
                        false => "narrow the filter, sort by _id, or serve this read model from MongoDB",
                    };
                    return Err(StoreError::OverBudget {
                        transient: false,
                        message: format!(
                            "more than {} documents of {view} match the query and would be held to sort them: {advice}",
                            budget.sorted
                        ),
                    });
                }
            }
            if paged {
                return Ok(matching.into_iter().map(|(_, body)| body).collect());
            }
            Ok(query::page(&query, matching))
        })
        .await
    }

    async fn list_documents(
        &self,
        projection: &str,
        collection: &str,
        limit: usize,
    ) -> StoreResult<Vec<Value>> {
        let view = stable_name(projection, collection);
        self.with_reader(move |conn| {
            if !view_exists(conn, &view)? {
                return Err(StoreError::NotFound(format!("collection {view}")));
            }
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT body FROM {} ORDER BY id LIMIT ?1",
                    quoted(&view)
                ))
                .map_err(|e| StoreError::backend(format!("list {view}"), e))?;
            stmt.query_map([limit as i64], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.map(|r| r.map(parse_body)).collect())
                .map_err(|e| StoreError::backend(format!("list {view}"), e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::super::QueryBudget;
    use super::*;
    use crate::domain::{GenerationState, Manifest};
    use crate::store::{BatchWrites, Checkpoints, Generations};

    /// Column `column` of every row a query gives, as text.
    fn texts(
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
        column: usize,
    ) -> Vec<String> {
        conn.prepare(sql)
            .and_then(|mut s| s.query_map(params, |r| r.get(column))?.collect())
            .expect("query")
    }

    /// A store whose `numbers` read model holds `n` documents `{_id: "d00042", n: 42}`.
    async fn numbers(n: usize, budget: QueryBudget) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = SqliteStore::open(&dir.path().join("refold.db"))
            .await
            .expect("open")
            .with_query_budget(budget);
        let manifest = Manifest::new("numbers", 1, ["numbers"]);
        let documents = (0..n).map(|i| json!({ "_id": format!("d{i:05}"), "n": i }));
        serve(&store, &manifest, documents).await;
        (dir, store)
    }

    /// Serve `documents` (each with its `_id`) as the only collection of a projection's active
    /// generation.
    async fn serve(
        store: &SqliteStore,
        manifest: &Manifest,
        documents: impl IntoIterator<Item = Value>,
    ) {
        let generation = store
            .create_generation(manifest, "hash", &[], None)
            .await
            .expect("create generation");
        let collection = &manifest.collections[0].name;
        let documents = documents
            .into_iter()
            .map(|document| {
                let Value::Object(map) = document else {
                    unreachable!("documents are objects")
                };
                let id = map["_id"].as_str().unwrap_or_default().to_owned();
                (collection.clone(), id, Some(Arc::new(map)))
            })
            .collect();
        let writes = BatchWrites {
            documents,
            ..BatchWrites::default()
        };
        store
            .commit(&generation, writes, 0, 1)
            .await
            .expect("commit");
        store
            .activate(&generation, GenerationState::Retired)
            .await
            .expect("activate");
    }

    /// A fresh store, and a `people` projection whose one collection has a unique index
    /// `by_email` on `field`.
    async fn people(field: &str) -> (tempfile::TempDir, std::path::PathBuf, SqliteStore, Manifest) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("refold.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let mut manifest = Manifest::new("people", 1, ["people"]);
        manifest.collections[0]
            .indexes
            .push(crate::domain::IndexSpec::unique("by_email", &[field]));
        (dir, path, store, manifest)
    }

    /// A building generation's collections get their unique indexes at once and the others at
    /// the cut-over, in the same transaction that makes the generation active.
    #[tokio::test]
    async fn secondary_indexes_are_built_at_the_cut_over() {
        let (_dir, path, store, mut manifest) = people("email").await;
        manifest.collections[0]
            .indexes
            .push(crate::domain::IndexSpec {
                unique: false,
                ..crate::domain::IndexSpec::unique("by_name", &["name"])
            });
        let generation = store
            .create_generation(&manifest, "hash", &[], None)
            .await
            .expect("create generation");
        let indexes = || {
            let conn = Connection::open(&path).expect("open");
            texts(
                &conn,
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'people__g1__people' AND sql IS NOT NULL ORDER BY name",
                [],
                0,
            )
        };
        assert_eq!(indexes(), ["people__g1__people__by_email"]);
        store
            .prepare_collections(&generation, &manifest)
            .await
            .expect("prepare again");
        assert_eq!(indexes(), ["people__g1__people__by_email"]);
        store
            .activate(&generation, GenerationState::Retired)
            .await
            .expect("activate");
        assert_eq!(
            indexes(),
            [
                "people__g1__people__by_email",
                "people__g1__people__by_name"
            ]
        );
        let conn = Connection::open(&path).expect("open");
        let left: i64 = conn
            .query_row("SELECT count(*) FROM deferred_indexes", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 0);
    }

    /// A query asking the first key of a unique index to equal strings or numbers reads the
    /// documents the index gives (SQLite's plan says so), and answers as a scan would:
    /// documents without the key, or with a value of another kind, are neither missed nor
    /// wrongly kept.
    #[tokio::test]
    async fn equality_on_a_unique_key_is_answered_from_its_index() {
        let (_dir, path, store, manifest) = people("contact.email").await;
        let documents = (0..2_000).map(|i| match i % 4 {
            0 => json!({ "_id": format!("p{i}"), "contact": { "email": format!("e{i}") }, "n": i }),
            1 => json!({ "_id": format!("p{i}"), "contact": { "email": i }, "n": i }),
            2 => json!({ "_id": format!("p{i}"), "contact": {}, "n": i }),
            _ => json!({ "_id": format!("p{i}"), "n": i }),
        });
        serve(&store, &manifest, documents).await;
        let ids = |found: Vec<Value>| -> Vec<String> {
            found
                .iter()
                .filter_map(|d| d["_id"].as_str().map(str::to_owned))
                .collect()
        };
        let equal = query(
            json!({ "contact.email": "e40", "n": { "$lt": 1000 } }),
            None,
        );
        let found = store
            .find_documents("people", "people", &equal)
            .await
            .expect("find");
        assert_eq!(ids(found), ["p40"]);
        let any = query(
            json!({ "contact.email": { "$in": ["e8", "e12", "nobody"] } }),
            Some(json!({ "n": -1 })),
        );
        let found = store
            .find_documents("people", "people", &any)
            .await
            .expect("find");
        assert_eq!(ids(found), ["p12", "p8"]);

        let conn = Connection::open(&path).expect("open");
        let (condition, _) = unique_prefilter(&conn, "people__people", &equal)
            .expect("look up")
            .expect("a unique index answers the filter");
        let plan = texts(
            &conn,
            &format!(
                "EXPLAIN QUERY PLAN SELECT id, body FROM \"people__people\" WHERE {condition}"
            ),
            ["e40"],
            3,
        );
        assert!(
            plan.iter().any(|step| step.contains("USING INDEX")),
            "{plan:?}"
        );
        let numbers = query(json!({ "contact.email": { "$in": [5, 9.0] } }), None);
        assert!(
            unique_prefilter(&conn, "people__people", &numbers)
                .expect("look up")
                .is_some()
        );
        let found = store
            .find_documents("people", "people", &numbers)
            .await
            .expect("find");
        assert_eq!(ids(found), ["p5", "p9"]);
        let mixed = query(json!({ "contact.email": { "$in": [5, "e8"] } }), None);
        assert!(
            unique_prefilter(&conn, "people__people", &mixed)
                .expect("look up")
                .is_none()
        );
        let other = query(json!({ "n": "e40" }), None);
        assert!(
            unique_prefilter(&conn, "people__people", &other)
                .expect("look up")
                .is_none()
        );
    }

    fn query(filter: Value, sort: Option<Value>) -> Query {
        Query::parse(Some(&filter), sort.as_ref(), None, Some(5)).expect("query")
    }

    /// A query that would hold more matching documents than its budget to sort them is refused
    /// with a message naming the bound; one in `_id` order stops at its page and is served.
    #[tokio::test]
    async fn queries_past_their_budget_are_refused() {
        let budget = QueryBudget {
            time: Duration::from_secs(60),
            sorted: 10,
        };
        let (_dir, store) = numbers(50, budget).await;
        let all = json!({ "n": { "$gte": 0 } });
        let refused = store
            .find_documents(
                "numbers",
                "numbers",
                &query(all.clone(), Some(json!({ "n": -1 }))),
            )
            .await;
        assert!(
            matches!(&refused, Err(StoreError::OverBudget { transient: false, message }) if message.contains("more than 10 documents")),
            "{refused:?}"
        );
        let page = store
            .find_documents("numbers", "numbers", &query(all, None))
            .await
            .expect("a query in _id order stops at its page");
        let ids: Vec<&str> = page.iter().filter_map(|d| d["_id"].as_str()).collect();
        assert_eq!(ids, ["d00000", "d00001", "d00002", "d00003", "d00004"]);

        let budget = QueryBudget {
            time: Duration::ZERO,
            sorted: 100_000,
        };
        let (_dir, store) = numbers(3_000, budget).await;
        let refused = store
            .find_documents("numbers", "numbers", &query(json!({ "n": -1 }), None))
            .await;
        assert!(
            matches!(&refused, Err(StoreError::OverBudget { transient: true, message }) if message.contains("ran past")),
            "{refused:?}"
        );
    }
}
