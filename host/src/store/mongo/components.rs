//! Published components on MongoDB (see [`Components`]): the bytes in `component_chunks`
//! (`_id` `HASH:N`, at most [`CHUNK_BYTES`] each), recorded whole in `components` (`_id` the
//! hash, its size and number of chunks) only once every chunk is written, so a component found
//! there is complete; the deployment in `deployments` (`_id` the name, the hash it names, who
//! published it and when), whose revision (`counters`, `_id` `deployments`) moves on with
//! every change. Bytes are never removed: a rollback, or a host that starts later,
//! may need the code of any generation.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Binary, Document, doc, spec::BinarySubtype};
use sha2::{Digest, Sha256};

use super::{MongoStore, backend};
use crate::domain::time;
use crate::store::{Components, Published, StoreError, StoreResult};

/// Bytes per chunk: well under a document's 16 MiB.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

impl MongoStore {
    fn components_collection(&self) -> mongodb::Collection<Document> {
        self.db.collection("components")
    }

    fn chunks_collection(&self) -> mongodb::Collection<Document> {
        self.db.collection("component_chunks")
    }

    fn deployments_collection(&self) -> mongodb::Collection<Document> {
        self.db.collection("deployments")
    }

    /// Move the deployment's revision on, after a change to it.
    async fn next_revision(&self) -> StoreResult<()> {
        self.counters()
            .update_one(
                doc! { "_id": "deployments" },
                doc! { "$inc": { "revision": 1i64 } },
            )
            .upsert(true)
            .await
            .map_err(backend("move the deployment's revision on"))?;
        Ok(())
    }

    /// Keep `bytes` under `hash`, unless they are kept already.
    async fn keep(&self, hash: &str, bytes: &[u8]) -> StoreResult<()> {
        let components = self.components_collection();
        let kept = components
            .find_one(doc! { "_id": hash })
            .await
            .map_err(backend("read a component"))?;
        if kept.is_some() {
            return Ok(());
        }
        let chunks = bytes.chunks(CHUNK_BYTES).collect::<Vec<_>>();
        for (n, chunk) in chunks.iter().enumerate() {
            let id = format!("{hash}:{n}");
            let data = Binary {
                subtype: BinarySubtype::Generic,
                bytes: chunk.to_vec(),
            };
            // The same bytes whoever writes them: a publisher racing this one writes the same.
            self.chunks_collection()
                .replace_one(
                    doc! { "_id": &id },
                    doc! { "_id": &id, "hash": hash, "n": n as i64, "data": data },
                )
                .upsert(true)
                .await
                .map_err(backend("store a component's bytes"))?;
        }
        components
            .update_one(
                doc! { "_id": hash },
                doc! { "$setOnInsert": {
                    "size": bytes.len() as i64, "chunks": chunks.len() as i64,
                    "storedAtMs": time::now_millis(),
                } },
            )
            .upsert(true)
            .await
            .map_err(backend("record a component"))?;
        Ok(())
    }
}

fn to_published(d: &Document) -> Published {
    let text = |key: &str| d.get_str(key).unwrap_or_default().to_owned();
    Published {
        name: text("_id"),
        hash: text("hash"),
        size: d.get_i64("size").unwrap_or_default() as u64,
        source: text("source"),
        published_at_ms: d.get_i64("publishedAtMs").unwrap_or_default(),
    }
}

#[async_trait]
impl Components for MongoStore {
    fn publishes(&self) -> bool {
        true
    }

    async fn publish(
        &self,
        name: &str,
        bytes: &[u8],
        source: &str,
    ) -> StoreResult<(Published, bool)> {
        if name.is_empty() || name.len() > 1024 {
            return Err(StoreError::InvalidInput(format!(
                "component name `{name}`: give 1 to 1024 characters"
            )));
        }
        let hash = format!("{:x}", Sha256::digest(bytes));
        self.keep(&hash, bytes).await?;
        let deployments = self.deployments_collection();
        let current = deployments
            .find_one(doc! { "_id": name })
            .await
            .map_err(backend("read the deployment"))?;
        if let Some(current) = current.filter(|d| d.get_str("hash") == Ok(hash.as_str())) {
            return Ok((to_published(&current), false));
        }
        let record = doc! {
            "_id": name, "hash": &hash, "size": bytes.len() as i64, "source": source,
            "publishedAtMs": time::now_millis(),
        };
        deployments
            .replace_one(doc! { "_id": name }, record.clone())
            .upsert(true)
            .await
            .map_err(backend("publish a component"))?;
        self.next_revision().await?;
        Ok((to_published(&record), true))
    }

    async fn unpublish(&self, name: &str, source: Option<&str>) -> StoreResult<bool> {
        let mut filter = doc! { "_id": name };
        if let Some(source) = source {
            filter.insert("source", source);
        }
        let deleted = self
            .deployments_collection()
            .delete_one(filter)
            .await
            .map_err(backend("withdraw a component"))?;
        if deleted.deleted_count > 0 {
            self.next_revision().await?;
        }
        Ok(deleted.deleted_count > 0)
    }

    async fn published(&self) -> StoreResult<Vec<Published>> {
        let docs: Vec<Document> = self
            .deployments_collection()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(backend("read the deployment"))?
            .try_collect()
            .await
            .map_err(backend("read the deployment"))?;
        Ok(docs.iter().map(to_published).collect())
    }

    async fn deployment_revision(&self) -> StoreResult<u64> {
        let counter = self
            .counters()
            .find_one(doc! { "_id": "deployments" })
            .await
            .map_err(backend("read the deployment's revision"))?;
        Ok(counter
            .and_then(|c| c.get_i64("revision").ok())
            .unwrap_or_default() as u64)
    }

    async fn component(&self, hash: &str) -> StoreResult<Option<Vec<u8>>> {
        let Some(record) = self
            .components_collection()
            .find_one(doc! { "_id": hash })
            .await
            .map_err(backend("read a component"))?
        else {
            return Ok(None);
        };
        let chunks: Vec<Document> = self
            .chunks_collection()
            .find(doc! { "hash": hash })
            .sort(doc! { "n": 1 })
            .await
            .map_err(backend("read a component's bytes"))?
            .try_collect()
            .await
            .map_err(backend("read a component's bytes"))?;
        let expected = record.get_i64("chunks").unwrap_or_default();
        let mut bytes = Vec::with_capacity(record.get_i64("size").unwrap_or_default() as usize);
        for (n, chunk) in chunks.iter().enumerate() {
            if chunk.get_i64("n") != Ok(n as i64) {
                break;
            }
            if let Ok(data) = chunk.get_binary_generic("data") {
                bytes.extend_from_slice(data);
            }
        }
        if chunks.len() as i64 != expected || format!("{:x}", Sha256::digest(&bytes)) != hash {
            return Err(StoreError::NotFound(format!(
                "the bytes of component {hash}: its stored chunks are missing or corrupt"
            )));
        }
        Ok(Some(bytes))
    }
}
