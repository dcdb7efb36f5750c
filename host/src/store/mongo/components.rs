//! Published components on MongoDB (see [`Components`]): the bytes in `component_chunks`
//! (`_id` `HASH:N`, at most [`CHUNK_BYTES`] each), recorded whole in `components` (`_id` the
//! hash, its size and number of chunks) only once every chunk is written, so a component found
//! there is complete; the deployment in `deployments` (`_id` the name, the hash it names, who
//! published it and when), whose revision (`counters`, `_id` `deployments`) moves on with
//! every change, in the same transaction; what each source published under each name in
//! `publications` (`_id` `SOURCE\nNAME`), so a folder publishes again only what changed in it. Bytes are never removed: a rollback, or a host that starts later,
//! may need the code of any generation.

use async_trait::async_trait;
use mongodb::bson::{Binary, Document, doc, spec::BinarySubtype};
use std::collections::BTreeMap;

use super::{MongoStore, all_by_id, backend, find_all, transaction};
use crate::domain::{code_hash, time};
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

    fn publications_collection(&self) -> mongodb::Collection<Document> {
        self.db.collection("publications")
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

/// Move the deployment's revision on, in the transaction of the change.
async fn next_revision(
    counters: &mongodb::Collection<Document>,
    session: &mut mongodb::ClientSession,
) -> Result<(), mongodb::error::Error> {
    counters
        .update_one(
            doc! { "_id": "deployments" },
            doc! { "$inc": { "revision": 1i64 } },
        )
        .upsert(true)
        .session(session)
        .await?;
    Ok(())
}

/// A source's record of what it published under a name.
fn publication_id(source: &str, name: &str) -> String {
    format!("{source}\n{name}")
}

fn to_published(d: &Document) -> Published {
    let text = |key: &str| d.get_str(key).unwrap_or_default().to_owned();
    Published {
        name: text("_id"),
        hash: text("hash"),
        declares: text("declares"),
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
        declares: &str,
    ) -> StoreResult<(Published, bool)> {
        if name.is_empty() || name.len() > 1024 {
            return Err(StoreError::InvalidInput(format!(
                "component name `{name}`: give 1 to 1024 characters"
            )));
        }
        let hash = code_hash(bytes);
        self.keep(&hash, bytes).await?;
        let (deployments, publications, counters) = (
            self.deployments_collection(),
            self.publications_collection(),
            self.counters(),
        );
        let record = doc! {
            "_id": name, "hash": &hash, "size": bytes.len() as i64, "source": source,
            "declares": declares, "publishedAtMs": time::now_millis(),
        };
        transaction!(self, "publish a component", |session| async {
            let other = deployments
                .find_one(doc! { "declares": declares, "_id": { "$ne": name } })
                .session(&mut session)
                .await?;
            if let Some(other) = other {
                let other = other.get_str("_id").unwrap_or_default().to_owned();
                return Ok(Err(StoreError::InvalidInput(format!(
                    "{declares} is already published as `{other}`: publish it under that name, \
                     or withdraw that one first (refold deploy --remove {other})"
                ))));
            }
            publications
                .replace_one(
                    doc! { "_id": publication_id(source, name) },
                    doc! { "source": source, "name": name, "hash": &hash },
                )
                .upsert(true)
                .session(&mut session)
                .await?;
            let current = deployments
                .find_one(doc! { "_id": name })
                .session(&mut session)
                .await?;
            if let Some(current) = current.filter(|d| d.get_str("hash") == Ok(hash.as_str())) {
                return Ok(Ok((to_published(&current), false)));
            }
            deployments
                .replace_one(doc! { "_id": name }, record.clone())
                .upsert(true)
                .session(&mut session)
                .await?;
            next_revision(&counters, &mut session).await?;
            Ok(Ok((to_published(&record), true)))
        })
    }

    async fn unpublish(
        &self,
        name: &str,
        hash: Option<&str>,
        source: Option<&str>,
    ) -> StoreResult<bool> {
        let (deployments, publications, counters) = (
            self.deployments_collection(),
            self.publications_collection(),
            self.counters(),
        );
        let mut filter = doc! { "_id": name };
        if let Some(hash) = hash {
            filter.insert("hash", hash);
        }
        transaction!(self, "withdraw a component", |session| async {
            if let Some(source) = source {
                publications
                    .delete_one(doc! { "_id": publication_id(source, name) })
                    .session(&mut session)
                    .await?;
            }
            let deleted = deployments
                .delete_one(filter.clone())
                .session(&mut session)
                .await?;
            if deleted.deleted_count > 0 {
                next_revision(&counters, &mut session).await?;
            }
            Ok(Ok(deleted.deleted_count > 0))
        })
    }

    async fn published_by(&self, source: &str) -> StoreResult<BTreeMap<String, String>> {
        let docs = find_all(
            &self.publications_collection(),
            doc! { "source": source },
            doc! { "_id": 1 },
            "read a source's publications",
        )
        .await?;
        Ok(docs
            .iter()
            .map(|d| {
                let text = |key: &str| d.get_str(key).unwrap_or_default().to_owned();
                (text("name"), text("hash"))
            })
            .collect())
    }

    async fn published(&self) -> StoreResult<Vec<Published>> {
        let docs = all_by_id(&self.deployments_collection(), "read the deployment").await?;
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
        let chunks = find_all(
            &self.chunks_collection(),
            doc! { "hash": hash },
            doc! { "n": 1 },
            "read a component's bytes",
        )
        .await?;
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
        if chunks.len() as i64 != expected || code_hash(&bytes) != hash {
            return Err(StoreError::NotFound(format!(
                "the bytes of component {hash}: its stored chunks are missing or corrupt"
            )));
        }
        Ok(Some(bytes))
    }
}
