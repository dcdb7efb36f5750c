//! Served reads on MongoDB: the active generation's documents through the stable names (views).
//! The server runs the query; the domain's query language renders it
//! ([`crate::domain::query`]).

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use serde_json::Value;

use super::{MongoStore, backend};
use crate::domain::extjson;
use crate::domain::generation::stable_name;
use crate::store::{Documents, Query, StoreError, StoreResult};

impl MongoStore {
    async fn collection_exists(&self, name: &str) -> StoreResult<bool> {
        let names = self
            .db
            .list_collection_names()
            .filter(doc! { "name": name })
            .await
            .map_err(backend("list collections"))?;
        Ok(!names.is_empty())
    }
}

#[async_trait]
impl Documents for MongoStore {
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
