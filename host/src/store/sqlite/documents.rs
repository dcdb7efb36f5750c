//! Served reads on SQLite: the active generation's documents through the stable names (views).
//! Queries are evaluated by the domain's query engine ([`crate::domain::query`]) on the
//! documents' BSON form, so both stores answer alike.

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
        self.with_reader(move |conn| {
            if !view_exists(conn, &view)? {
                return Err(StoreError::NotFound(format!("collection {view}")));
            }
            let failed = |e| StoreError::backend(format!("query {view}"), e);
            // No filter, id order: SQLite reads the page alone (its text order is MongoDB's
            // order of string ids, byte by byte). Anything else is matched and sorted here.
            let paged = query.is_id_order_only();
            let sql = match paged {
                true => format!(
                    "SELECT id, body FROM {} ORDER BY id LIMIT ?1 OFFSET ?2",
                    quoted(&view)
                ),
                false => format!("SELECT id, body FROM {}", quoted(&view)),
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
            let mut documents = Vec::new();
            while let Some(row) = rows.next().map_err(failed)? {
                let id: String = row.get(0).map_err(failed)?;
                let body = parse_body(row.get(1).map_err(failed)?);
                let Value::Object(map) = &body else {
                    continue;
                };
                match extjson::to_document(map) {
                    Ok(document) => documents.push((document, body)),
                    Err(error) => {
                        tracing::warn!(collection = %view, %id, %error, "document left out of a query: it is not valid Extended JSON");
                    }
                }
            }
            if paged {
                return Ok(documents.into_iter().map(|(_, body)| body).collect());
            }
            Ok(query::run(&query, documents))
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
