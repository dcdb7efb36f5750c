//! Served reads on SQLite: the active generation's documents through the stable names (views).
//! Queries are evaluated by the domain's query engine ([`crate::domain::query`]) on the
//! documents' BSON form, so both stores answer alike.

use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{SqliteStore, quoted};
use crate::domain::generation::stable_name;
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
            let sql = match (paged, in_id_order) {
                (true, _) => format!(
                    "SELECT id, body FROM {} ORDER BY id LIMIT ?1 OFFSET ?2",
                    quoted(&view)
                ),
                (false, true) => format!("SELECT id, body FROM {} ORDER BY id", quoted(&view)),
                (false, false) => format!("SELECT id, body FROM {}", quoted(&view)),
            };
            let mut stmt = conn.prepare(&sql).map_err(failed)?;
            let mut rows = match paged {
                true => stmt.query(params![
                    query.limit as i64,
                    i64::try_from(query.skip).unwrap_or(i64::MAX)
                ]),
                false => stmt.query([]),
            }
            .map_err(failed)?;
            let started = Instant::now();
            let page_end = query.skip.saturating_add(query.limit);
            let (mut scanned, mut matching) = (0usize, Vec::new());
            while let Some(row) = rows.next().map_err(failed)? {
                scanned += 1;
                if scanned % 1024 == 0 && started.elapsed() > budget.time {
                    return Err(StoreError::OverBudget(format!(
                        "the query of {view} ran past {:?} after scanning {scanned} documents: the embedded store matches documents one by one; narrow the filter, or serve this read model from MongoDB",
                        budget.time
                    )));
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
                    return Err(StoreError::OverBudget(format!(
                        "more than {} documents of {view} match the query and would have to be sorted: narrow the filter, sort by _id, or serve this read model from MongoDB",
                        budget.sorted
                    )));
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

    /// A store whose `numbers` read model holds `n` documents `{_id: "d00042", n: 42}`.
    async fn numbers(n: usize, budget: QueryBudget) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = SqliteStore::open(&dir.path().join("refold.db"))
            .await
            .expect("open")
            .with_query_budget(budget);
        let manifest = Manifest::new("numbers", 1, ["numbers"]);
        let generation = store
            .create_generation(&manifest, "hash")
            .await
            .expect("create generation");
        let documents = (0..n)
            .map(|i| {
                let Value::Object(map) = json!({ "_id": format!("d{i:05}"), "n": i }) else {
                    unreachable!()
                };
                (
                    "numbers".to_owned(),
                    format!("d{i:05}"),
                    Some(Arc::new(map)),
                )
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
        (dir, store)
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
            matches!(&refused, Err(StoreError::OverBudget(m)) if m.contains("more than 10 documents")),
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
            matches!(&refused, Err(StoreError::OverBudget(m)) if m.contains("ran past")),
            "{refused:?}"
        );
    }
}
