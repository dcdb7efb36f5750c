//! A handle on one of the projection's collections.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wit::refold::projection::collections as host;
use crate::{Error, Result, Update};

/// One of the collections declared in the manifest. Writes are staged in the current batch and
/// committed with the checkpoint; reads see the batch's earlier writes.
#[derive(Debug, Clone, Copy)]
pub struct Collection<'a> {
    name: &'a str,
}

impl<'a> Collection<'a> {
    pub(crate) fn new(name: &'a str) -> Self {
        Self { name }
    }

    /// Get a document by id and decode it.
    pub fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>> {
        match host::get(self.name, id)? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    /// Get a document by id as JSON.
    pub fn get_json(&self, id: &str) -> Result<Option<serde_json::Value>> {
        self.get(id)
    }

    /// Insert or replace the document with this id.
    pub fn put<T: Serialize + ?Sized>(&self, id: &str, document: &T) -> Result<()> {
        let json = serde_json::to_string(document)
            .map_err(|e| Error::other(format!("document does not encode: {e}")))?;
        Ok(host::put(self.name, id, &json)?)
    }

    /// Delete the document with this id; returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        Ok(host::delete(self.name, id)?)
    }

    /// Apply an update, creating the document if it does not exist (upsert).
    pub fn update(&self, id: &str, update: Update) -> Result<()> {
        host::update_fields(self.name, id, &update.into_wit(), true)?;
        Ok(())
    }

    /// Apply an update only if the document exists; returns whether it did.
    pub fn update_existing(&self, id: &str, update: Update) -> Result<bool> {
        Ok(host::update_fields(
            self.name,
            id,
            &update.into_wit(),
            false,
        )?)
    }
}
