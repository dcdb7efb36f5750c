//! The generation registry on MongoDB: the `generations` collection, and stable names as views
//! that a cut-over repoints with `collMod`. Numbering and the cut-over's plan come from
//! [`crate::store::generations`].

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{IndexOptions, ReadConcern};
use mongodb::{Collection, IndexModel};

use super::{MongoStore, backend, errors};
use crate::domain::generation::stable_name;
use crate::domain::manifest::IndexSpec;
use crate::domain::{Generation, GenerationState, Manifest, Position, time};
use crate::store::generations::{self, CutOver};
use crate::store::{Generations, StoreError, StoreResult};

pub(super) fn generation_id(projection: &str, number: u32) -> String {
    format!("{projection}:{number}")
}

pub(super) fn to_generation(doc: &Document) -> StoreResult<Generation> {
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
        upcasters: doc
            .get_array("upcasters")
            .map(|hashes| {
                hashes
                    .iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
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

    pub(super) fn physical(
        &self,
        generation: &Generation,
        collection: &str,
    ) -> Collection<Document> {
        self.db.collection(&generation.physical_name(collection))
    }

    /// Point the stable names the plan names at the generation's collections (each a `collMod`
    /// of its view, atomic per name), and drop those it removes.
    async fn point_views(&self, generation: &Generation, plan: &CutOver) -> StoreResult<()> {
        for collection in &plan.point {
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
        for collection in &plan.remove {
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

#[async_trait]
impl Generations for MongoStore {
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
        upcasters: &[String],
        seen: Option<u32>,
    ) -> StoreResult<Generation> {
        loop {
            let registered = self.generations(&manifest.name).await?;
            if let Some(g) =
                generations::registered_since(&registered, seen, manifest, code_hash, upcasters)
            {
                // Its indexes exist before this host may run it (idempotent).
                self.prepare_collections(g, manifest).await?;
                return Ok(g.clone());
            }
            let latest = registered.iter().map(|g| g.number).max();
            let generation = generations::next(manifest, code_hash, upcasters, latest);
            let inserted = self
                .generations_collection()
                .insert_one(doc! {
                    "_id": generation_id(&generation.projection, generation.number),
                    "projection": &generation.projection, "number": i64::from(generation.number),
                    "version": i64::from(generation.version), "codeHash": code_hash, "upcasters": upcasters, "state": generation.state.as_str(),
                    "checkpoint": generation.checkpoint as i64, "createdAt": mongodb::bson::DateTime::from_millis(time::now_millis()),
                })
                .await;
            match inserted {
                Ok(_) => {
                    // Its writes are recorded from its first batch (see `WriteHistory`). Without
                    // this mark, a trace of the generation replays its whole history.
                    let birth = doc! {
                        "projection": &generation.projection, "generation": i64::from(generation.number),
                        "after": 0i64, "upto": 0i64, "redriven": [], "documents": [],
                    };
                    if let Err(error) = self.document_writes_collection().insert_one(birth).await {
                        tracing::warn!(projection = %generation.projection, generation = generation.number, %error, "could not mark the generation's writes as recorded; its traces will replay its whole history");
                    }
                    self.prepare_collections(&generation, manifest).await?;
                    return Ok(generation);
                }
                // Another host numbered the same generation first: read them again.
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
                    let options = IndexOptions::builder()
                        .name(index.name.clone())
                        .unique(index.unique);
                    let options = if index.unique {
                        options
                            .partial_filter_expression(unique_partial_filter(index))
                            .build()
                    } else {
                        options.build()
                    };
                    IndexModel::builder().keys(keys).options(options).build()
                })
                .collect();
            if !indexes.is_empty() {
                match self
                    .db
                    .collection::<Document>(&name)
                    .create_indexes(indexes)
                    .await
                {
                    Ok(_) => {}
                    // An index made by an older Refold under the same name (a unique index
                    // before they were partial): kept as it is.
                    Err(e)
                        if errors::code(&e)
                            .is_some_and(|c| errors::INDEX_CONFLICT.contains(&c)) =>
                    {
                        tracing::warn!(collection = %name, error = %e, "an index of this collection was made with other options; keeping it");
                    }
                    Err(e) => {
                        return Err(StoreError::backend(format!("create indexes on {name}"), e));
                    }
                }
            }
        }
        let names: Vec<String> = manifest.collection_names();
        self.update_generation(generation, doc! { "collections": &names })
            .await?;
        if generation.state == GenerationState::Active {
            let plan = CutOver {
                point: names,
                remove: Vec::new(),
                demote: Vec::new(),
            };
            self.point_views(generation, &plan).await?;
        }
        Ok(())
    }

    async fn set_code(&self, generation: &Generation, code_hash: &str) -> StoreResult<()> {
        self.update_generation(generation, doc! { "codeHash": code_hash })
            .await
    }

    async fn activate(
        &self,
        generation: &Generation,
        previous: GenerationState,
    ) -> StoreResult<()> {
        let registered = self.generations(&generation.projection).await?;
        let plan = generations::cut_over(&registered, generation)?;
        let seen = registered
            .iter()
            .find(|g| g.number == generation.number)
            .map(|g| g.state)
            .unwrap_or(generation.state);
        // Stable names first, as readers expect of an active generation; then the state, guarded
        // by what the plan was made from. An abandon that landed in between makes the claim
        // match nothing: the names go back to the generation that is active, and the
        // activation is refused.
        self.point_views(generation, &plan).await?;
        let claimed = self
            .generations_collection()
            .update_one(
                doc! {
                    "_id": generation_id(&generation.projection, generation.number),
                    "state": { "$in": [seen.as_str(), GenerationState::Active.as_str()] },
                },
                doc! { "$set": { "state": GenerationState::Active.as_str() } },
            )
            .await
            .map_err(backend("activate generation"))?;
        if claimed.matched_count == 0 {
            let now = self.generations(&generation.projection).await?;
            if let Some(active) = now.iter().rfind(|g| g.state == GenerationState::Active) {
                let back = generations::cut_over(&now, active)?;
                self.point_views(active, &back).await?;
            }
            let stored = now.iter().find(|g| g.number == generation.number);
            return Err(match stored {
                None => StoreError::NotFound(format!(
                    "{} generation {}",
                    generation.projection, generation.number
                )),
                Some(g) => StoreError::InvalidInput(format!(
                    "{} generation {} is {} and cannot be activated",
                    g.projection,
                    g.number,
                    g.state.as_str()
                )),
            });
        }
        self.generations_collection()
            .update_many(
                doc! {
                    "projection": &generation.projection,
                    "state": GenerationState::Active.as_str(),
                    "number": { "$ne": i64::from(generation.number) },
                },
                doc! { "$set": { "state": previous.as_str() } },
            )
            .await
            .map_err(backend("retire generations"))?;
        Ok(())
    }

    async fn set_state(
        &self,
        generation: &Generation,
        state: GenerationState,
    ) -> StoreResult<bool> {
        generations::leaving_building(generation, state)?;
        self.generations_collection()
            .update_one(
                doc! {
                    "_id": generation_id(&generation.projection, generation.number),
                    "state": GenerationState::Building.as_str(),
                },
                doc! { "$set": { "state": state.as_str() } },
            )
            .await
            .map(|r| r.matched_count == 1)
            .map_err(backend("record state"))
    }

    async fn set_error(&self, generation: &Generation, error: Option<&str>) -> StoreResult<()> {
        let value = error
            .map(|e| Bson::String(e.to_owned()))
            .unwrap_or(Bson::Null);
        self.update_generation(generation, doc! { "lastError": value })
            .await
    }
}

/// A unique index holds only documents whose every key has a value (neither missing nor null),
/// as on the embedded store, where SQLite never counts NULL as a duplicate: two documents
/// without an email do not collide on a unique email.
fn unique_partial_filter(index: &IndexSpec) -> Document {
    const VALUE_TYPES: [&str; 12] = [
        "double",
        "string",
        "object",
        "binData",
        "objectId",
        "bool",
        "date",
        "regex",
        "int",
        "timestamp",
        "long",
        "decimal",
    ];
    let keys: Vec<Document> = index
        .keys
        .iter()
        .map(|key| doc! { key.field.clone(): { "$type": VALUE_TYPES.to_vec() } })
        .collect();
    doc! { "$and": keys }
}
