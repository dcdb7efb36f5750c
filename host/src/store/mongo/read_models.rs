//! Read collections, generations and checkpoints on MongoDB.
//!
//! A batch commits in one transaction: for each collection it touched, the documents it changed
//! are deleted and the surviving ones inserted again (two round trips per collection instead of
//! one per document), then the generation's checkpoint moves, guarded by its previous value.
//! Stable names are views; a cut-over repoints them with `collMod`.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{IndexOptions, ReadConcern};
use mongodb::{Collection, IndexModel};
use serde_json::{Map, Value};

use super::{MongoStore, backend, errors, transaction};
use crate::domain::extjson;
use crate::domain::generation::stable_name;
use crate::domain::{Generation, GenerationState, Manifest, Position, time};
use crate::store::{
    BatchWrites, DeadLetter, DocumentReader, Query, ReadModelStore, Refusal, StoreError,
    StoreResult,
};

/// A projection's dead letters at `positions`, or all of them.
fn dead_letters_filter(projection: &str, positions: Option<&[Position]>) -> Document {
    match positions {
        None => doc! { "projection": projection },
        Some(positions) => doc! {
            "projection": projection,
            "position": { "$in": positions.iter().map(|p| *p as i64).collect::<Vec<_>>() },
        },
    }
}

fn generation_id(projection: &str, number: u32) -> String {
    format!("{projection}:{number}")
}

fn to_generation(doc: &Document) -> StoreResult<Generation> {
    let int = |key: &str| match doc.get(key) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        _ => 0,
    };
    let text = |key: &str| doc.get_str(key).map(str::to_owned).unwrap_or_default();
    Ok(Generation {
        projection: text("projection"),
        number: int("number") as u32,
        version: int("version") as u32,
        code_hash: text("codeHash"),
        state: GenerationState::parse(&text("state")).unwrap_or(GenerationState::Retired),
        checkpoint: int("checkpoint") as Position,
        last_error: doc.get_str("lastError").ok().map(str::to_owned),
        collections: doc
            .get_array("collections")
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

impl MongoStore {
    async fn query_generations(&self, filter: Document) -> StoreResult<Vec<Generation>> {
        let cursor = self
            .generations_collection()
            .find(filter)
            .sort(doc! { "projection": 1, "number": 1 })
            .read_concern(ReadConcern::majority())
            .await
            .map_err(backend("read generations"))?;
        let docs: Vec<Document> = cursor
            .try_collect()
            .await
            .map_err(backend("read generations"))?;
        docs.iter().map(to_generation).collect()
    }

    fn physical(&self, generation: &Generation, collection: &str) -> Collection<Document> {
        self.db.collection(&generation.physical_name(collection))
    }

    async fn collection_exists(&self, name: &str) -> StoreResult<bool> {
        let names = self
            .db
            .list_collection_names()
            .filter(doc! { "name": name })
            .await
            .map_err(backend("list collections"))?;
        Ok(!names.is_empty())
    }

    /// Point the stable names of `collections` at generation `number`'s collections (each a
    /// `collMod` of its view, atomic per name), and drop those of `stale` collections the
    /// generation does not have.
    async fn point_views(
        &self,
        generation: &Generation,
        collections: &[String],
        stale: &[String],
    ) -> StoreResult<()> {
        for collection in collections {
            let view = stable_name(&generation.projection, collection);
            let source = generation.physical_name(collection);
            let repoint = doc! { "collMod": &view, "viewOn": &source, "pipeline": [] };
            if let Some(current) = self.view_source(&view).await? {
                if current == source {
                    continue;
                }
                self.db
                    .run_command(repoint)
                    .await
                    .map_err(|e| StoreError::backend(format!("repoint view {view}"), e))?;
                if self.view_source(&view).await?.as_deref() != Some(source.as_str()) {
                    // mongod applies `collMod` with `viewOn` atomically. SecantusDB 0.7
                    // acknowledges it and changes nothing; there the view is dropped and
                    // created again, which readers can observe as a moment without it.
                    tracing::warn!(%view, "the server ignored collMod viewOn; recreating the view (not atomic)");
                    self.db
                        .collection::<Document>(&view)
                        .drop()
                        .await
                        .map_err(|e| StoreError::backend(format!("drop view {view}"), e))?;
                    self.db
                        .create_collection(&view)
                        .view_on(source.clone())
                        .pipeline(Vec::<Document>::new())
                        .await
                        .map_err(|e| StoreError::backend(format!("create view {view}"), e))?;
                }
                continue;
            }
            match self
                .db
                .create_collection(&view)
                .view_on(source.clone())
                .pipeline(Vec::<Document>::new())
                .await
            {
                Ok(()) => {}
                Err(e) if errors::code(&e) == Some(errors::NAMESPACE_EXISTS) => {
                    self.db
                        .run_command(repoint)
                        .await
                        .map_err(|e| StoreError::backend(format!("repoint view {view}"), e))?;
                }
                Err(e) => return Err(StoreError::backend(format!("create view {view}"), e)),
            }
        }
        for collection in stale.iter().filter(|c| !collections.contains(c)) {
            let view = stable_name(&generation.projection, collection);
            self.db
                .collection::<Document>(&view)
                .drop()
                .await
                .map_err(|e| StoreError::backend(format!("drop view {view}"), e))?;
        }
        Ok(())
    }

    /// The collection a view reads from; `None` when no view of that name exists.
    async fn view_source(&self, view: &str) -> StoreResult<Option<String>> {
        let specs: Vec<_> = self
            .db
            .list_collections()
            .filter(doc! { "name": view, "type": "view" })
            .await
            .map_err(backend("list views"))?
            .try_collect()
            .await
            .map_err(backend("list views"))?;
        Ok(specs.first().and_then(|spec| spec.options.view_on.clone()))
    }

    async fn update_generation(&self, generation: &Generation, set: Document) -> StoreResult<()> {
        self.generations_collection()
            .update_one(
                doc! { "_id": generation_id(&generation.projection, generation.number) },
                doc! { "$set": set },
            )
            .await
            .map(drop)
            .map_err(backend("update generation"))
    }
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
}

impl Clone for MongoStore {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            db: self.db.clone(),
            feed: std::sync::Arc::clone(&self.feed),
        }
    }
}

#[async_trait]
impl ReadModelStore for MongoStore {
    async fn generations(&self, projection: &str) -> StoreResult<Vec<Generation>> {
        self.query_generations(doc! { "projection": projection })
            .await
    }

    async fn all_generations(&self) -> StoreResult<Vec<Generation>> {
        self.query_generations(doc! {}).await
    }

    async fn create_generation(
        &self,
        manifest: &Manifest,
        code_hash: &str,
    ) -> StoreResult<Generation> {
        loop {
            let latest = self
                .generations(&manifest.name)
                .await?
                .last()
                .map(|g| g.number)
                .unwrap_or(0);
            let generation = Generation {
                projection: manifest.name.clone(),
                number: latest + 1,
                version: manifest.version,
                code_hash: code_hash.to_owned(),
                state: GenerationState::Building,
                checkpoint: 0,
                last_error: None,
                collections: manifest
                    .collections
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
            };
            let inserted = self
                .generations_collection()
                .insert_one(doc! {
                    "_id": generation_id(&generation.projection, generation.number),
                    "projection": &generation.projection, "number": i64::from(generation.number),
                    "version": i64::from(generation.version), "codeHash": code_hash, "state": "building",
                    "checkpoint": 0i64, "createdAt": mongodb::bson::DateTime::from_millis(time::now_millis()),
                })
                .await;
            match inserted {
                Ok(_) => {
                    self.prepare_collections(&generation, manifest).await?;
                    return Ok(generation);
                }
                // Another host numbered the same generation first: take the next number.
                Err(e) if errors::code(&e) == Some(errors::DUPLICATE_KEY) => continue,
                Err(e) => return Err(StoreError::backend("register generation", e)),
            }
        }
    }

    async fn prepare_collections(
        &self,
        generation: &Generation,
        manifest: &Manifest,
    ) -> StoreResult<()> {
        for collection in &manifest.collections {
            let name = generation.physical_name(&collection.name);
            match self.db.create_collection(&name).await {
                Ok(()) => {}
                Err(e) if errors::code(&e) == Some(errors::NAMESPACE_EXISTS) => {}
                Err(e) => return Err(StoreError::backend(format!("create collection {name}"), e)),
            }
            let indexes: Vec<IndexModel> = collection
                .indexes
                .iter()
                .map(|index| {
                    let mut keys = Document::new();
                    for key in &index.keys {
                        keys.insert(key.field.clone(), if key.descending { -1 } else { 1 });
                    }
                    IndexModel::builder()
                        .keys(keys)
                        .options(
                            IndexOptions::builder()
                                .name(index.name.clone())
                                .unique(index.unique)
                                .build(),
                        )
                        .build()
                })
                .collect();
            if !indexes.is_empty() {
                self.db
                    .collection::<Document>(&name)
                    .create_indexes(indexes)
                    .await
                    .map_err(|e| StoreError::backend(format!("create indexes on {name}"), e))?;
            }
        }
        let names: Vec<String> = manifest
            .collections
            .iter()
            .map(|c| c.name.clone())
            .collect();
        self.update_generation(generation, doc! { "collections": &names })
            .await?;
        if generation.state == GenerationState::Active {
            self.point_views(generation, &names, &[]).await?;
        }
        Ok(())
    }

    async fn set_code(&self, generation: &Generation, code_hash: &str) -> StoreResult<()> {
        self.update_generation(generation, doc! { "codeHash": code_hash })
            .await
    }

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
                    .map_err(|e| StoreError::InvalidInput(format!("{collection}/{id}: {e}")))?;
                entry.1.push(doc);
            }
        }
        let generations = self.generations_collection();
        let key = generation_id(&generation.projection, generation.number);
        transaction!(self, "commit batch", |session| async {
            let moved = generations
                .update_one(
                    doc! { "_id": &key, "checkpoint": from as i64 },
                    doc! { "$set": { "checkpoint": to as i64 } },
                )
                .session(&mut session)
                .await?;
            if moved.matched_count == 0 {
                let found = generations
                    .find_one(doc! { "_id": &key })
                    .session(&mut session)
                    .await?;
                let decision = match found {
                    Some(doc) => StoreError::CheckpointMoved {
                        projection: generation.projection.clone(),
                        generation: generation.number,
                        expected: from,
                        found: to_generation(&doc)
                            .map(|g| g.checkpoint)
                            .unwrap_or_default(),
                    },
                    None => StoreError::NotFound(format!(
                        "{} generation {}",
                        generation.projection, generation.number
                    )),
                };
                return Ok(Err(decision));
            }
            for (collection, (ids, documents)) in &by_collection {
                let coll = self.physical(generation, collection);
                coll.delete_many(doc! { "_id": { "$in": ids } })
                    .session(&mut session)
                    .await?;
                if !documents.is_empty() {
                    coll.insert_many(documents).session(&mut session).await?;
                }
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

    async fn activate(
        &self,
        generation: &Generation,
        previous: GenerationState,
    ) -> StoreResult<()> {
        let stale: Vec<String> = self
            .generations(&generation.projection)
            .await?
            .into_iter()
            .filter(|g| g.state == GenerationState::Active && g.number != generation.number)
            .flat_map(|g| g.collections)
            .collect();
        self.point_views(generation, &generation.collections, &stale)
            .await?;
        self.generations_collection()
            .update_many(
                doc! { "projection": &generation.projection, "state": "active", "number": { "$ne": i64::from(generation.number) } },
                doc! { "$set": { "state": previous.as_str() } },
            )
            .await
            .map_err(backend("retire generations"))?;
        self.update_generation(generation, doc! { "state": "active" })
            .await
    }

    async fn set_state(&self, generation: &Generation, state: GenerationState) -> StoreResult<()> {
        self.update_generation(generation, doc! { "state": state.as_str() })
            .await
    }

    async fn record_refusal(&self, component: &str, error: Option<&str>) -> StoreResult<()> {
        let refusals = self.refusals_collection();
        match error {
            Some(error) => refusals
                .replace_one(
                    doc! { "_id": component },
                    doc! { "_id": component, "error": error, "at": mongodb::bson::DateTime::from_millis(time::now_millis()) },
                )
                .upsert(true)
                .await
                .map(drop),
            None => refusals
                .delete_one(doc! { "_id": component })
                .await
                .map(drop),
        }
        .map_err(backend("record refusal"))
    }

    async fn refusals(&self) -> StoreResult<Vec<Refusal>> {
        let docs: Vec<Document> = self
            .refusals_collection()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(backend("read refusals"))?
            .try_collect()
            .await
            .map_err(backend("read refusals"))?;
        Ok(docs
            .iter()
            .map(|d| Refusal {
                component: d.get_str("_id").unwrap_or_default().to_owned(),
                error: d.get_str("error").unwrap_or_default().to_owned(),
                at_ms: d
                    .get_datetime("at")
                    .map(|t| t.timestamp_millis())
                    .unwrap_or_default(),
            })
            .collect())
    }

    async fn set_error(&self, generation: &Generation, error: Option<&str>) -> StoreResult<()> {
        let value = error
            .map(|e| Bson::String(e.to_owned()))
            .unwrap_or(Bson::Null);
        self.update_generation(generation, doc! { "lastError": value })
            .await
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

    async fn get_document(
        &self,
        projection: &str,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Value>> {
        let view = stable_name(projection, collection);
        if !self.collection_exists(&view).await? {
            return Err(StoreError::NotFound(format!("collection {view}")));
        }
        let found = self
            .db
            .collection::<Document>(&view)
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| StoreError::backend(format!("read {view}/{id}"), e))?;
        Ok(found.as_ref().map(|d| Value::Object(extjson::to_map(d))))
    }

    async fn find_documents(
        &self,
        projection: &str,
        collection: &str,
        query: &Query,
    ) -> StoreResult<Vec<Value>> {
        let view = stable_name(projection, collection);
        if !self.collection_exists(&view).await? {
            return Err(StoreError::NotFound(format!("collection {view}")));
        }
        let docs: Vec<Document> = self
            .db
            .collection::<Document>(&view)
            .find(query.filter.to_document())
            .sort(query.sort_document())
            .skip(query.skip as u64)
            .limit(query.limit as i64)
            .await
            .map_err(|e| StoreError::backend(format!("query {view}"), e))?
            .try_collect()
            .await
            .map_err(|e| StoreError::backend(format!("query {view}"), e))?;
        Ok(docs
            .iter()
            .map(|d| Value::Object(extjson::to_map(d)))
            .collect())
    }

    async fn record_dead_letter(&self, l: &DeadLetter) -> StoreResult<()> {
        let id = format!("{}:{}:{}", l.projection, l.generation, l.position);
        self.dead_letters_collection()
            .replace_one(
                doc! { "_id": &id },
                doc! {
                    "_id": &id, "projection": &l.projection, "generation": i64::from(l.generation),
                    "position": l.position as i64, "version": i64::from(l.version), "eventId": &l.event_id,
                    "eventType": &l.event_type, "aggregateId": &l.aggregate_id, "error": &l.error,
                    "attempts": i64::from(l.attempts), "at": mongodb::bson::DateTime::from_millis(l.at_ms),
                    "retry": l.retry_requested,
                },
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(backend("record a dead letter"))
    }

    async fn dead_letters(&self, projection: Option<&str>) -> StoreResult<Vec<DeadLetter>> {
        let filter = match projection {
            Some(name) => doc! { "projection": name },
            None => doc! {},
        };
        let docs: Vec<Document> = self
            .dead_letters_collection()
            .find(filter)
            .sort(doc! { "projection": 1, "generation": 1, "position": 1 })
            .await
            .map_err(backend("read dead letters"))?
            .try_collect()
            .await
            .map_err(backend("read dead letters"))?;
        let int = |d: &Document, key: &str| d.get_i64(key).unwrap_or_default();
        let text = |d: &Document, key: &str| d.get_str(key).unwrap_or_default().to_owned();
        Ok(docs
            .iter()
            .map(|d| DeadLetter {
                projection: text(d, "projection"),
                generation: int(d, "generation") as u32,
                version: int(d, "version") as u32,
                position: int(d, "position") as Position,
                event_id: text(d, "eventId"),
                event_type: text(d, "eventType"),
                aggregate_id: text(d, "aggregateId"),
                error: text(d, "error"),
                attempts: int(d, "attempts") as u32,
                at_ms: d
                    .get_datetime("at")
                    .map(|t| t.timestamp_millis())
                    .unwrap_or_default(),
                retry_requested: d.get_bool("retry").unwrap_or(false),
            })
            .collect())
    }

    async fn request_dead_letter_retry(
        &self,
        projection: &str,
        positions: Option<&[Position]>,
    ) -> StoreResult<u64> {
        self.dead_letters_collection()
            .update_many(
                dead_letters_filter(projection, positions),
                doc! { "$set": { "retry": true } },
            )
            .await
            .map(|r| r.matched_count)
            .map_err(backend("request a retry of dead letters"))
    }

    async fn discard_dead_letters(
        &self,
        projection: &str,
        positions: Option<&[Position]>,
    ) -> StoreResult<u64> {
        self.dead_letters_collection()
            .delete_many(dead_letters_filter(projection, positions))
            .await
            .map(|r| r.deleted_count)
            .map_err(backend("discard dead letters"))
    }

    async fn set_paused(&self, projection: &str, paused: bool) -> StoreResult<()> {
        let collection = self.paused_collection();
        if paused {
            collection
                .update_one(
                    doc! { "_id": projection },
                    doc! { "$setOnInsert": { "at": mongodb::bson::DateTime::from_millis(time::now_millis()) } },
                )
                .upsert(true)
                .await
                .map(drop)
        } else {
            collection
                .delete_one(doc! { "_id": projection })
                .await
                .map(drop)
        }
        .map_err(backend("pause or resume"))
    }

    async fn paused(&self) -> StoreResult<BTreeSet<String>> {
        let docs: Vec<Document> = self
            .paused_collection()
            .find(doc! {})
            .await
            .map_err(backend("read paused projections"))?
            .try_collect()
            .await
            .map_err(backend("read paused projections"))?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }

    async fn list_documents(
        &self,
        projection: &str,
        collection: &str,
        limit: usize,
    ) -> StoreResult<Vec<Value>> {
        let view = stable_name(projection, collection);
        if !self.collection_exists(&view).await? {
            return Err(StoreError::NotFound(format!("collection {view}")));
        }
        let cursor = self
            .db
            .collection::<Document>(&view)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .limit(limit as i64)
            .await
            .map_err(|e| StoreError::backend(format!("list {view}"), e))?;
        let docs: Vec<Document> = cursor
            .try_collect()
            .await
            .map_err(|e| StoreError::backend(format!("list {view}"), e))?;
        Ok(docs
            .iter()
            .map(|d| Value::Object(extjson::to_map(d)))
            .collect())
    }
}
