//! Checkpoint-guarded batch commits on SQLite, and the point reads guests make of their
//! generation's tables. A batch's documents, the dead letters of the events it skipped, those it
//! re-drove and its checkpoint commit in one immediate transaction on the writer connection.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{SqliteStore, quoted, schema};
use crate::domain::generation::physical_name;
use crate::domain::{Generation, Position};
use crate::store::generations::guard_checkpoint;
use crate::store::{
    BatchWrites, Checkpoints, DocumentReader, StoreError, StoreResult, WriteHistory, WritingBatch,
    written_key,
};

fn commit_blocking(
    conn: &mut Connection,
    generation: &Generation,
    writes: &BatchWrites,
    from: Position,
    to: Position,
) -> StoreResult<()> {
    conn.execute_batch(schema::UNFLUSHED)
        .map_err(|e| StoreError::backend("begin batch", e))?;
    let committed = commit_unflushed(conn, generation, writes, from, to);
    // Back to flushing for the writes after it, whether the batch landed or not. Should that
    // fail, the batch's outcome is still the answer (a batch that landed reported as failed
    // would be retried from a checkpoint that moved), and the next write sets it again (see
    // `SqliteStore::with_writer`).
    if let Err(error) = conn.execute_batch(schema::FLUSHED) {
        tracing::warn!(%error, "the store's writer could not be set back to flushing; the next write sets it");
    }
    committed
}

/// [`commit_blocking`] on a connection set to [`schema::UNFLUSHED`]: the projection's next
/// append-to-visible time is one disk flush (the append's) instead of two.
fn commit_unflushed(
    conn: &mut Connection,
    generation: &Generation,
    writes: &BatchWrites,
    from: Position,
    to: Position,
) -> StoreResult<()> {
    // Documents are written in place first. Two documents of the batch that trade values of a
    // unique index break it in between, although the batch as a whole keeps it (MongoDB's
    // store, which deletes a batch's documents before inserting them, accepts such a batch):
    // on a unique violation the batch is written again that way, and refused only if the
    // violation remains.
    match commit_attempt(conn, generation, writes, from, to, WriteOrder::InPlace)? {
        Ok(()) => Ok(()),
        Err(_) => commit_attempt(conn, generation, writes, from, to, WriteOrder::DeletesFirst)?
            .map_err(StoreError::Refused),
    }
}

/// How a batch's documents are written.
#[derive(Clone, Copy, PartialEq)]
enum WriteOrder {
    /// One upsert or delete per document, in the batch's order.
    InPlace,
    /// Every document of the batch deleted, then the surviving ones inserted.
    DeletesFirst,
}

/// One try at a batch; the inner error names a unique index the writes break (the transaction
/// is then rolled back).
fn commit_attempt(
    conn: &mut Connection,
    generation: &Generation,
    writes: &BatchWrites,
    from: Position,
    to: Position,
    order: WriteOrder,
) -> StoreResult<Result<(), String>> {
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
    if let Err(violation) = write_documents(&tx, generation, writes, order)? {
        return Ok(Err(violation));
    }
    record_writes(&tx, generation, writes, from, to)?;
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
        .map(Ok)
}

/// Record which documents the batch wrote, and the events it handled (see [`WriteHistory`]):
/// one row per batch, its documents a JSON array of [`crate::store::written_key`]s.
fn record_writes(
    tx: &Connection,
    generation: &Generation,
    writes: &BatchWrites,
    from: Position,
    to: Position,
) -> StoreResult<()> {
    if writes.documents.is_empty() {
        return Ok(());
    }
    const RECORD: &str = "record the batch's documents";
    let redriven = serde_json::to_string(&writes.resolved_dead_letters)
        .map_err(|e| StoreError::backend(RECORD, e))?;
    for (after, upto, documents) in writes.segments(from, to) {
        if documents.is_empty() {
            continue;
        }
        let documents =
            serde_json::to_string(&documents).map_err(|e| StoreError::backend(RECORD, e))?;
        tx.prepare_cached(
            "INSERT INTO document_writes (projection, generation, after, upto, redriven, documents) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                generation.projection,
                generation.number,
                after as i64,
                upto as i64,
                redriven,
                documents
            ])
        })
        .map_err(|e| StoreError::backend(RECORD, e))?;
    }
    Ok(())
}

/// Write a batch's documents in `order`; the inner error names the document and the unique
/// index it breaks.
fn write_documents(
    tx: &Connection,
    generation: &Generation,
    writes: &BatchWrites,
    order: WriteOrder,
) -> StoreResult<Result<(), String>> {
    let upsert = |table: &str| {
        format!(
            "INSERT INTO {table} (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = excluded.body"
        )
    };
    let delete = |table: &str| format!("DELETE FROM {table} WHERE id = ?1");
    if order == WriteOrder::DeletesFirst {
        for (collection, id, _) in &writes.documents {
            let table = quoted(&generation.physical_name(collection));
            tx.prepare_cached(&delete(&table))
                .and_then(|mut s| s.execute([id]))
                .map_err(|e| StoreError::backend(format!("write {table}/{id}"), e))?;
        }
    }
    for (collection, id, document) in &writes.documents {
        let table = quoted(&generation.physical_name(collection));
        let result = match (document, order) {
            (Some(doc), _) => tx.prepare_cached(&upsert(&table)).and_then(|mut s| {
                s.execute(params![
                    id,
                    serde_json::to_string(&**doc).unwrap_or_default()
                ])
            }),
            (None, WriteOrder::InPlace) => tx
                .prepare_cached(&delete(&table))
                .and_then(|mut s| s.execute([id])),
            (None, WriteOrder::DeletesFirst) => Ok(0),
        };
        match result {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(code, message))
                if code.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                // SQLite says "UNIQUE constraint failed: index '<table>__<index>'".
                let prefix = format!("{}__", generation.physical_name(collection));
                let index = message
                    .as_deref()
                    .and_then(|m| m.split('\'').nth(1))
                    .map(|name| name.strip_prefix(&prefix).unwrap_or(name))
                    .unwrap_or("?");
                return Ok(Err(format!(
                    "{collection}/{id}: a value of its unique index `{index}` is already held by another document"
                )));
            }
            Err(e) => return Err(StoreError::backend(format!("write {table}/{id}"), e)),
        }
    }
    Ok(Ok(()))
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

    fn is_empty(&mut self) -> StoreResult<bool> {
        for table in self.tables.values() {
            let any: bool = self
                .conn
                .query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| {
                    r.get(0)
                })
                .map_err(|e| StoreError::backend(format!("read {table}"), e))?;
            if any {
                return Ok(false);
            }
        }
        Ok(true)
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

#[async_trait]
impl WriteHistory for SqliteStore {
    async fn batches_writing(
        &self,
        generation: &Generation,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Vec<WritingBatch>>> {
        let key = written_key(collection, id);
        // The key as it appears in a row's JSON array: `instr` finds the candidate rows, and
        // each candidate's array is parsed to be sure (an id may hold quotes).
        let quoted_key = serde_json::to_string(&key).unwrap_or_default();
        let (projection, number) = (generation.projection.clone(), generation.number);
        self.with_reader(move |conn| {
            let failed = |e: &dyn std::fmt::Display| {
                StoreError::backend("read the write history", e.to_string())
            };
            let recorded: bool = conn
                .query_row(
                    "SELECT count(*) > 0 FROM document_writes WHERE projection = ?1 AND generation = ?2 AND upto = 0",
                    params![projection, number],
                    |r| r.get(0),
                )
                .map_err(|e| failed(&e))?;
            if !recorded {
                return Ok(None);
            }
            let mut statement = conn
                .prepare(
                    "SELECT after, upto, redriven, documents FROM document_writes \
                     WHERE projection = ?1 AND generation = ?2 AND instr(documents, ?3) > 0 \
                     ORDER BY upto, rowid",
                )
                .map_err(|e| failed(&e))?;
            let rows = statement
                .query_map(params![projection, number, quoted_key], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(|e| failed(&e))?;
            let mut batches = Vec::new();
            for row in rows {
                let (after, upto, redriven, documents) = row.map_err(|e| failed(&e))?;
                let documents: Vec<String> =
                    serde_json::from_str(&documents).map_err(|e| failed(&e))?;
                if !documents.contains(&key) {
                    continue;
                }
                batches.push(WritingBatch {
                    after: after as Position,
                    upto: upto as Position,
                    redriven: serde_json::from_str(&redriven).map_err(|e| failed(&e))?,
                });
            }
            Ok(Some(batches))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExpectedVersion, Manifest, NewEvent};
    use crate::store::{EventLog, Generations};

    /// The writer's `synchronous` setting as the last write left it (2 is FULL, 1 NORMAL), read
    /// past `SqliteStore::with_writer`, which sets it.
    fn writer_synchronous(store: &SqliteStore) -> i64 {
        let conn = store.writer.lock().expect("writer");
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("synchronous")
    }

    /// A projection's batch commits unflushed and leaves the writer flushing, whether the batch
    /// landed or was refused; an append flushes whatever the writer was left at.
    #[tokio::test]
    async fn the_writer_flushes_again_after_a_batch_and_for_every_append() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = SqliteStore::open(&dir.path().join("refold.db"))
            .await
            .expect("open");
        let manifest = Manifest::new("flushing", 1, ["seen"]);
        let generation = store
            .create_generation(&manifest, "flushing", &[], None)
            .await
            .expect("create generation");
        store
            .commit(&generation, BatchWrites::default(), 0, 1)
            .await
            .expect("commit");
        assert_eq!(writer_synchronous(&store), 2);
        let refused = store
            .commit(&generation, BatchWrites::default(), 0, 2)
            .await;
        assert!(
            matches!(refused, Err(StoreError::CheckpointMoved { .. })),
            "{refused:?}"
        );
        assert_eq!(writer_synchronous(&store), 2);

        store
            .writer
            .lock()
            .expect("writer")
            .execute_batch(schema::UNFLUSHED)
            .expect("unflush");
        store
            .append(
                "s",
                ExpectedVersion::Any,
                vec![NewEvent {
                    id: None,
                    aggregate_type: "Thing".into(),
                    event_type: "Tick".into(),
                    event_data: serde_json::json!({}),
                    metadata: serde_json::json!({}),
                    timestamp_ms: None,
                }],
            )
            .await
            .expect("append");
        assert_eq!(writer_synchronous(&store), 2);
    }
}
