//! Checkpoint-guarded batch commits on SQLite, and the point reads guests make of their
//! generation's tables. A batch's documents, the dead letters of the events it skipped, those it
//! re-drove and its checkpoint commit in one immediate transaction on the writer connection.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{SqliteStore, quoted};
use crate::domain::generation::physical_name;
use crate::domain::{Generation, Position};
use crate::store::generations::guard_checkpoint;
use crate::store::{BatchWrites, Checkpoints, DocumentReader, StoreError, StoreResult};

fn commit_blocking(
    conn: &mut Connection,
    generation: &Generation,
    writes: &BatchWrites,
    from: Position,
    to: Position,
) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::backend("begin batch", e))?;
    let stored: Option<i64> = tx
        .query_row(
            "SELECT checkpoint FROM generations WHERE projection = ?1 AND number = ?2",
            params![generation.projection, generation.number],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| StoreError::backend("read checkpoint", e))?;
    guard_checkpoint(generation, stored.map(|p| p as Position), from)?;
    for (collection, id, document) in &writes.documents {
        let table = quoted(&generation.physical_name(collection));
        let result = match document {
            Some(doc) => tx
                .prepare_cached(&format!(
                    "INSERT INTO {table} (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = excluded.body"
                ))
                .and_then(|mut s| {
                    s.execute(params![id, serde_json::to_string(&**doc).unwrap_or_default()])
                }),
            None => tx
                .prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))
                .and_then(|mut s| s.execute([id])),
        };
        result.map_err(|e| StoreError::backend(format!("write {table}/{id}"), e))?;
    }
    for position in &writes.resolved_dead_letters {
        tx.prepare_cached(
            "DELETE FROM dead_letters WHERE projection = ?1 AND generation = ?2 AND position = ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                generation.projection,
                generation.number,
                *position as i64
            ])
        })
        .map_err(|e| StoreError::backend("resolve a dead letter", e))?;
    }
    for letter in &writes.dead_letters {
        super::operator::insert_dead_letter(&tx, letter)
            .map_err(|e| StoreError::backend("record a dead letter", e))?;
    }
    tx.execute(
        "UPDATE generations SET checkpoint = ?3 WHERE projection = ?1 AND number = ?2",
        params![generation.projection, generation.number, to as i64],
    )
    .map_err(|e| StoreError::backend("move checkpoint", e))?;
    tx.commit()
        .map_err(|e| StoreError::backend("commit batch", e))
}

/// A document reader over one generation's tables, with its own connection.
struct SqliteReader {
    conn: Connection,
    tables: HashMap<String, String>,
}

impl DocumentReader for SqliteReader {
    fn get(&mut self, collection: &str, id: &str) -> StoreResult<Option<Map<String, Value>>> {
        let table = self
            .tables
            .get(collection)
            .ok_or_else(|| StoreError::NotFound(format!("collection {collection}")))?;
        let body: Option<String> = self
            .conn
            .prepare_cached(&format!("SELECT body FROM {table} WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| StoreError::backend(format!("read {table}/{id}"), e))?;
        body.map(|text| match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(StoreError::backend(
                format!("read {table}/{id}"),
                "stored document is not a JSON object",
            )),
        })
        .transpose()
    }
}

#[async_trait]
impl Checkpoints for SqliteStore {
    async fn commit(
        &self,
        generation: &Generation,
        writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> StoreResult<()> {
        let generation = generation.clone();
        self.with_writer(move |conn| commit_blocking(conn, &generation, &writes, from, to))
            .await
    }

    fn reader(&self, generation: &Generation) -> StoreResult<Box<dyn DocumentReader>> {
        let conn = Self::open_reader(self.path())?;
        // Tables are looked up by logical name; the generation's manifest is not needed here
        // because the physical name is derived, and a missing table fails the read clearly.
        let prefix = physical_name(&generation.projection, generation.number, "");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1")
            .and_then(|mut s| s.query_map([&prefix], |r| r.get(0))?.collect())
            .map_err(|e| StoreError::backend("list collections", e))?;
        let tables = tables
            .into_iter()
            .filter_map(|t| {
                t.strip_prefix(&prefix)
                    .map(|logical| (logical.to_owned(), quoted(&t)))
            })
            .collect();
        Ok(Box::new(SqliteReader { conn, tables }))
    }
}
