//! Dead letters, refused components and paused projections on MongoDB: the collections
//! operators act on through the API and the CLI.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::{MongoStore, all_by_id, backend};
use crate::domain::{Position, time};
use crate::store::{
    DeadLetter, DeadLetterKey, DeadLetters, MAX_DEAD_LETTER_PAGE, OperatorState, Refusal,
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

/// A dead letter's `_id` (projection, generation, position) and document.
pub(super) fn dead_letter_document(l: &DeadLetter) -> (String, Document) {
    let id = format!("{}:{}:{}", l.projection, l.generation, l.position);
    let document = doc! {
        "_id": &id, "projection": &l.projection, "generation": i64::from(l.generation),
        "position": l.position as i64, "version": i64::from(l.version), "eventId": &l.event_id,
        "eventType": &l.event_type, "aggregateId": &l.aggregate_id, "error": &l.error,
        "attempts": i64::from(l.attempts), "at": mongodb::bson::DateTime::from_millis(l.at_ms),
        "retry": l.retry_requested,
    };
    (id, document)
}

fn to_dead_letter(d: &Document) -> DeadLetter {
    let int = |key: &str| d.get_i64(key).unwrap_or_default();
    let text = |key: &str| d.get_str(key).unwrap_or_default().to_owned();
    DeadLetter {
        projection: text("projection"),
        generation: int("generation") as u32,
        version: int("version") as u32,
        position: int("position") as Position,
        event_id: text("eventId"),
        event_type: text("eventType"),
        aggregate_id: text("aggregateId"),
        error: text("error"),
        attempts: int("attempts") as u32,
        at_ms: d
            .get_datetime("at")
            .map(|t| t.timestamp_millis())
            .unwrap_or_default(),
        retry_requested: d.get_bool("retry").unwrap_or(false),
    }
}

impl MongoStore {
    async fn find_dead_letters(
        &self,
        filter: Document,
        sort: Document,
    ) -> StoreResult<Vec<DeadLetter>> {
        let docs: Vec<Document> = self
            .dead_letters_collection()
            .find(filter)
            .sort(sort)
            .await
            .map_err(backend("read dead letters"))?
            .try_collect()
            .await
            .map_err(backend("read dead letters"))?;
        Ok(docs.iter().map(to_dead_letter).collect())
    }
}

#[async_trait]
impl DeadLetters for MongoStore {
    async fn record_dead_letter(&self, l: &DeadLetter) -> StoreResult<()> {
        let (id, document) = dead_letter_document(l);
        self.dead_letters_collection()
            .replace_one(doc! { "_id": &id }, document)
            .upsert(true)
            .await
            .map(drop)
            .map_err(backend("record a dead letter"))
    }

    async fn dead_letter_page(
        &self,
        projection: Option<&str>,
        after: Option<&DeadLetterKey>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetter>> {
        let mut filter = match projection {
            Some(name) => doc! { "projection": name },
            None => doc! {},
        };
        if let Some(k) = after {
            let (generation, position) = (i64::from(k.generation), k.position as i64);
            filter.insert(
                "$or",
                vec![
                    doc! { "projection": { "$gt": &k.projection } },
                    doc! { "projection": &k.projection, "generation": { "$gt": generation } },
                    doc! { "projection": &k.projection, "generation": generation, "position": { "$gt": position } },
                ],
            );
        }
        let docs: Vec<Document> = self
            .dead_letters_collection()
            .find(filter)
            .sort(doc! { "projection": 1, "generation": 1, "position": 1 })
            .limit(limit.min(MAX_DEAD_LETTER_PAGE) as i64)
            .await
            .map_err(backend("read dead letters"))?
            .try_collect()
            .await
            .map_err(backend("read dead letters"))?;
        Ok(docs.iter().map(to_dead_letter).collect())
    }

    async fn count_dead_letters(&self) -> StoreResult<BTreeMap<String, u64>> {
        let counts: Vec<Document> = self
            .dead_letters_collection()
            .aggregate([doc! { "$group": { "_id": "$projection", "n": { "$sum": 1 } } }])
            .await
            .map_err(backend("count dead letters"))?
            .try_collect()
            .await
            .map_err(backend("count dead letters"))?;
        Ok(counts
            .iter()
            .filter_map(|d| {
                let n = match d.get("n") {
                    Some(Bson::Int32(n)) => u64::try_from(*n).ok()?,
                    Some(Bson::Int64(n)) => u64::try_from(*n).ok()?,
                    _ => return None,
                };
                Some((d.get_str("_id").ok()?.to_owned(), n))
            })
            .collect())
    }

    async fn dead_letters_to_redrive(
        &self,
        projection: &str,
        generation: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        self.find_dead_letters(
            doc! { "projection": projection, "generation": i64::from(generation), "retry": true },
            doc! { "position": 1 },
        )
        .await
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
}

#[async_trait]
impl OperatorState for MongoStore {
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
        let docs = all_by_id(&self.refusals_collection(), "read refusals").await?;
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
        let docs = all_by_id(&self.paused_collection(), "read paused projections").await?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }
}
