//! Checkpoint-guarded batch commits on MongoDB, and the point reads guests make of their
//! generation's collections.
//!
//! A batch commits in one transaction: for each collection it touched, the documents it changed
//! are deleted and the surviving ones inserted again (two round trips per collection instead of
//! one per document), the dead letters of the events it skipped are recorded and those it
//! re-drove deleted, which documents it wrote is recorded (`document_writes`), and the
//! generation's checkpoint moves, guarded by its previous value.

use std::collections::BTreeMap;

use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use mongodb::options::ReadConcern;
use serde_json::{Map, Value};

use super::generations::{generation_id, to_generation};
use super::{MongoStore, errors, transaction};
use crate::domain::{Generation, Position, extjson};
use crate::store::generations::guard_checkpoint;
use crate::store::{
    BatchWrites, Checkpoints, DocumentReader, StoreError, StoreResult, WriteHistory, WritingBatch,
    written_key,
};

/// Most bytes of document keys in one record of a batch's writes: a batch that wrote more is
/// recorded in several, each far below MongoDB's 16 MiB.
const MAX_RECORD_KEY_BYTES: usize = 4 * 1024 * 1024;

/// The records of which documents a batch wrote (see [`WriteHistory`]).
fn write_records(
    generation: &Generation,
    writes: &BatchWrites,
    from: Position,
    to: Position,
) -> Vec<Document> {
    let redriven: Vec<i64> = writes
        .resolved_dead_letters
        .iter()
        .map(|p| *p as i64)
        .collect();
    let mut records = Vec::new();
    for (after, upto, written) in writes.segments(from, to) {
        let mut keys: Vec<String> = Vec::new();
        let mut bytes = 0;
        let mut keys_of = written.into_iter().peekable();
        while let Some(key) = keys_of.next() {
            bytes += key.len();
            keys.push(key);
            if bytes >= MAX_RECORD_KEY_BYTES || keys_of.peek().is_none() {
                records.push(doc! {
                    "projection": &generation.projection,
                    "generation": generation.number as i64,
                    "after": after as i64,
                    "upto": upto as i64,
                    "redriven": redriven.clone(),
                    "documents": std::mem::take(&mut keys),
                });
                bytes = 0;
            }
        }
    }
    records
}

/// Point reads of one generation for host calls. Runs on a blocking thread (the handler's), so
/// it drives the async driver with the runtime handle it was created on.
struct MongoReader {
    runtime: tokio::runtime::Handle,
    store: MongoStore,
    generation: Generation,
}

impl DocumentReader for MongoReader {
    fn get(&mut self, collection: &str, id: &str) -> StoreResult<Option<Map<String, Value>>> {
        let coll = self.store.physical(&self.generation, collection);
        let found = self
            .runtime
            .block_on(async {
                coll.find_one(doc! { "_id": id })
                    .read_concern(ReadConcern::majority())
                    .await
            })
            .map_err(|e| StoreError::backend(format!("read {}/{id}", coll.name()), e))?;
        Ok(found.as_ref().map(extjson::to_map))
    }

    fn is_empty(&mut self) -> StoreResult<bool> {
        for collection in &self.generation.collections {
            let coll = self.store.physical(&self.generation, collection);
            let found = self
                .runtime
                .block_on(async {
                    coll.find_one(doc! {})
                        .projection(doc! { "_id": 1 })
                        .read_concern(ReadConcern::majority())
                        .await
                })
                .map_err(|e| StoreError::backend(format!("read {}", coll.name()), e))?;
            if found.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[async_trait]
impl Checkpoints for MongoStore {
    async fn commit(
        &self,
        generation: &Generation,
        writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> StoreResult<()> {
        // Group by collection; convert before the transaction so bad documents fail early.
        let mut by_collection: BTreeMap<String, (Vec<String>, Vec<Document>)> = BTreeMap::new();
        for (collection, id, document) in &writes.documents {
            let entry = by_collection.entry(collection.clone()).or_default();
            entry.0.push(id.clone());
            if let Some(map) = document {
                let doc = extjson::to_document(map)
                    .map_err(|e| StoreError::Refused(format!("{collection}/{id}: {e}")))?;
                entry.1.push(doc);
            }
        }
        let records = write_records(generation, &writes, from, to);
        let generations = self.generations_collection();
        let key = generation_id(&generation.projection, generation.number);
        let commit_id = writes.commit_id as i64;
        // The fencing token: on a host that takes leases, the epoch it holds this generation's
        // lease with, checked (and written, so a takeover conflicts) in the transaction.
        let fence = match &self.leasing {
            None => None,
            Some(leasing) => match leasing.epoch(&key) {
                Some(epoch) => Some((leasing.owner.clone(), epoch)),
                None => {
                    return Err(StoreError::LeaseLost(format!(
                        "{} generation {}: this host does not hold its lease",
                        generation.projection, generation.number
                    )));
                }
            },
        };
        let leases = self.db.collection::<Document>("leases");
        transaction!(self, "commit batch", |session| async {
            if let Some((owner, epoch)) = &fence {
                let held = leases
                    .update_one(
                        doc! { "_id": &key, "owner": owner, "epoch": epoch },
                        doc! { "$set": { "committedAtMs": crate::domain::time::now_millis() } },
                    )
                    .session(&mut session)
                    .await?;
                if held.matched_count == 0 {
                    return Ok(Err(StoreError::LeaseLost(format!(
                        "{} generation {}: another host took its lease over (epoch {epoch} is no longer current)",
                        generation.projection, generation.number
                    ))));
                }
            }
            let moved = generations
                .update_one(
                    doc! { "_id": &key, "checkpoint": from as i64 },
                    doc! { "$set": { "checkpoint": to as i64, "lastCommit": commit_id } },
                )
                .session(&mut session)
                .await?;
            if moved.matched_count == 0 {
                let found = generations
                    .find_one(doc! { "_id": &key })
                    .session(&mut session)
                    .await?;
                // This very commit, sent again after every answer to it was lost: it landed.
                let landed = found.as_ref().is_some_and(|doc| {
                    commit_id != 0
                        && doc.get_i64("lastCommit").ok() == Some(commit_id)
                        && to_generation(doc).is_ok_and(|g| g.checkpoint == to)
                });
                if landed {
                    return Ok(Ok(()));
                }
                let stored = found.map(|doc| {
                    to_generation(&doc)
                        .map(|g| g.checkpoint)
                        .unwrap_or_default()
                });
                let decision = guard_checkpoint(generation, stored, from)
                    .err()
                    .unwrap_or_else(|| {
                        StoreError::backend(
                            "commit batch",
                            "the checkpoint guard matched no generation",
                        )
                    });
                return Ok(Err(decision));
            }
            for (collection, (ids, documents)) in &by_collection {
                let coll = self.physical(generation, collection);
                coll.delete_many(doc! { "_id": { "$in": ids } })
                    .session(&mut session)
                    .await?;
                if !documents.is_empty() {
                    match coll.insert_many(documents).session(&mut session).await {
                        Ok(_) => {}
                        Err(e) if errors::code(&e) == Some(errors::DUPLICATE_KEY) => {
                            // The index's name only: the server's message also quotes the
                            // value, which is the projection's data, not an error's.
                            let message = errors::write_message(&e);
                            let index = message
                                .split("index: ")
                                .nth(1)
                                .and_then(|rest| rest.split_whitespace().next())
                                .unwrap_or("?");
                            let refused = format!(
                                "{collection}: a value of its unique index `{index}` is already held by another document"
                            );
                            return Ok(Err(StoreError::Refused(refused)));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if !records.is_empty() {
                self.document_writes_collection()
                    .insert_many(&records)
                    .session(&mut session)
                    .await?;
            }
            for letter in &writes.dead_letters {
                let (id, document) = super::operator::dead_letter_document(letter);
                self.dead_letters_collection()
                    .replace_one(doc! { "_id": &id }, document)
                    .upsert(true)
                    .session(&mut session)
                    .await?;
            }
            if !writes.resolved_dead_letters.is_empty() {
                let ids: Vec<String> = writes
                    .resolved_dead_letters
                    .iter()
                    .map(|p| format!("{}:{}:{p}", generation.projection, generation.number))
                    .collect();
                self.dead_letters_collection()
                    .delete_many(doc! { "_id": { "$in": ids } })
                    .session(&mut session)
                    .await?;
            }
            Ok(Ok(()))
        })
    }

    fn reader(&self, generation: &Generation) -> StoreResult<Box<dyn DocumentReader>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::backend("create a document reader", e))?;
        Ok(Box::new(MongoReader {
            runtime,
            store: self.clone(),
            generation: generation.clone(),
        }))
    }
}

#[async_trait]
impl WriteHistory for MongoStore {
    async fn batches_writing(
        &self,
        generation: &Generation,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Vec<WritingBatch>>> {
        use futures_util::TryStreamExt;
        let failed = |e: mongodb::error::Error| StoreError::backend("read the write history", e);
        let birth = doc! {
            "projection": &generation.projection,
            "generation": generation.number as i64,
            "upto": 0i64,
        };
        let records = self.document_writes_collection();
        if records.find_one(birth).await.map_err(failed)?.is_none() {
            return Ok(None);
        }
        let filter = doc! {
            "projection": &generation.projection,
            "generation": generation.number as i64,
            "documents": written_key(collection, id),
        };
        // A key is in one record of each call that wrote it, however many records a call took.
        let records: Vec<Document> = records
            .find(filter)
            .projection(doc! { "after": 1, "upto": 1, "redriven": 1 })
            .sort(doc! { "upto": 1, "_id": 1 })
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        let position = |record: &Document, field: &str| {
            record
                .get_i64(field)
                .map(|p| p as Position)
                .map_err(|e| StoreError::backend("read the write history", e))
        };
        let mut batches = Vec::with_capacity(records.len());
        for record in &records {
            let redriven = record
                .get_array("redriven")
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_i64())
                        .map(|p| p as Position)
                        .collect()
                })
                .unwrap_or_default();
            batches.push(WritingBatch {
                after: position(record, "after")?,
                upto: position(record, "upto")?,
                redriven,
            });
        }
        Ok(Some(batches))
    }
}
