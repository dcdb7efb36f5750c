//! The event log on MongoDB.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{ReadConcern, ReturnDocument};
use mongodb::{ClientSession, Collection};
use tokio::sync::watch;

use super::{MongoStore, errors, feed, transaction};
use crate::domain::extjson;
use crate::domain::json_object::JsonObject;
use crate::domain::{
    AppendResult, EventFilter, ExpectedVersion, Position, RecordedEvent, StreamVersion, time,
};
use crate::store::{
    EventLog, ImportBatch, Imported, Page, StoreError, StoreResult, StoredId, StreamAppend,
};

fn int(doc: &Document, key: &str) -> StoreResult<i64> {
    match doc.get(key) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        _ => Err(StoreError::backend(
            "decode event",
            format!("field `{key}` is missing or not an integer"),
        )),
    }
}

fn text(doc: &Document, key: &str) -> StoreResult<String> {
    doc.get_str(key)
        .map(str::to_owned)
        .map_err(|e| StoreError::backend("decode event", format!("field `{key}`: {e}")))
}

fn object_text(doc: &Document, key: &str) -> String {
    match doc.get_document(key) {
        Ok(inner) => extjson::to_json_text(inner),
        Err(_) => "{}".to_owned(),
    }
}

/// An event's id as text: a string as it is, an ObjectId (an event another application
/// inserted) as its hex form.
fn id_of(doc: &Document) -> StoreResult<String> {
    match doc.get("_id") {
        Some(Bson::ObjectId(oid)) => Ok(oid.to_hex()),
        _ => text(doc, "_id"),
    }
}

/// How long an append waits for the sequencer to stamp the unstamped last event of its stream.
const SEQUENCER_WAIT: Duration = Duration::from_secs(15);

pub(super) fn to_event(doc: &Document) -> StoreResult<RecordedEvent> {
    Ok(RecordedEvent {
        position: int(doc, "position")? as Position,
        id: id_of(doc)?,
        aggregate_id: text(doc, "aggregateId")?,
        aggregate_type: text(doc, "aggregateType")?,
        event_type: text(doc, "eventType")?,
        version: int(doc, "version")? as StreamVersion,
        timestamp_ms: doc
            .get_datetime("timestamp")
            .map(|d| d.timestamp_millis())
            .unwrap_or_default(),
        data: object_text(doc, "eventData"),
        metadata: object_text(doc, "metadata"),
    })
}

/// Drain a cursor of event documents.
/// Take the next `count` positions from the counter, in the session's transaction: the first of
/// them. The counter's write conflict serialises the transactions that take positions, so they
/// commit in position order.
async fn take_positions(
    counters: &Collection<Document>,
    session: &mut ClientSession,
    count: u64,
) -> mongodb::error::Result<Position> {
    let counter = counters
        .find_one_and_update(
            doc! { "_id": "events" },
            doc! { "$inc": { "position": count as i64 } },
        )
        .upsert(true)
        .return_document(ReturnDocument::After)
        .session(session)
        .await?;
    let last = counter
        .map(|c| int(&c, "position").unwrap_or_default())
        .unwrap_or_default() as u64;
    Ok(last + 1 - count)
}

async fn collect(
    cursor: mongodb::Cursor<Document>,
    context: &str,
) -> StoreResult<Vec<RecordedEvent>> {
    let docs: Vec<Document> = cursor
        .try_collect()
        .await
        .map_err(|e| StoreError::backend(context, e))?;
    docs.iter().map(to_event).collect()
}

impl MongoStore {
    /// The events of one call, ready to insert: documents in the seeds' shape.
    fn event_documents(
        append: &StreamAppend,
        current: StreamVersion,
        first: Position,
    ) -> StoreResult<Vec<Document>> {
        let now = time::now_millis();
        append
            .events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let invalid = |e: extjson::ConvertError| {
                    StoreError::InvalidInput(format!("{}: {e}", event.event_type))
                };
                let data = match &event.event_data {
                    serde_json::Value::Object(map) => extjson::to_document(map).map_err(invalid)?,
                    _ => Document::new(),
                };
                let metadata = match &event.metadata {
                    serde_json::Value::Object(map) => extjson::to_document(map).map_err(invalid)?,
                    _ => Document::new(),
                };
                Ok(doc! {
                    "_id": event.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    "position": (first + i as u64) as i64,
                    "aggregateId": &append.aggregate_id,
                    "aggregateType": &event.aggregate_type,
                    "eventType": &event.event_type,
                    "eventData": data,
                    "version": (current + 1 + i as u64) as i64,
                    "timestamp": DateTime::from_millis(event.timestamp_ms.unwrap_or(now)),
                    "metadata": metadata,
                })
            })
            .collect()
    }
}

/// A duplicate key on insert: a stream version another writer took (a conflict), or an event id
/// that exists already (bad input).
fn duplicate(error: &mongodb::error::Error, appends: &[StreamAppend]) -> StoreError {
    let message = error.to_string();
    match appends.first() {
        Some(first) if message.contains("aggregate_version") => StoreError::Conflict {
            aggregate_id: first.aggregate_id.clone(),
            expected: first.expected,
            actual: match first.expected {
                ExpectedVersion::Exact(v) => v + 1,
                _ => 0,
            },
        },
        _ => StoreError::InvalidInput(format!(
            "an event id of this append already exists: {message}"
        )),
    }
}

#[async_trait]
impl EventLog for MongoStore {
    async fn append_all(&self, appends: Vec<StreamAppend>) -> StoreResult<Vec<AppendResult>> {
        for append in &appends {
            append.validate()?;
        }
        let (events, counters) = (self.events(), self.counters());
        // An append to a stream whose last event another application inserted and the sequencer
        // has not stamped yet waits for it (`Err(stream)` below): it must not take a position
        // before an earlier version of its stream.
        let waiting_since = std::time::Instant::now();
        let results = loop {
            let outcome = transaction!(self, "append", |session| async {
                // Versions after each part of the call: a later part may extend the same stream.
                let mut versions: HashMap<&str, u64> = HashMap::new();
                let mut after = Vec::with_capacity(appends.len());
                // Parts sent before (recognised by their event ids) write nothing.
                let mut written = Vec::with_capacity(appends.len());
                for append in &appends {
                    let ids = append.explicit_ids();
                    let first = if ids.is_empty() {
                        None
                    } else {
                        let mut cursor = events
                            .find(doc! { "_id": { "$in": ids } })
                            .session(&mut session)
                            .await?;
                        let mut stored = Vec::new();
                        while let Some(doc) = cursor.next(&mut session).await.transpose()? {
                            let object = |key: &str| {
                                doc.get_document(key)
                                    .map(|d| serde_json::Value::Object(extjson::to_map(d)))
                                    .unwrap_or_default()
                            };
                            stored.push(StoredId {
                                id: doc.get_str("_id").unwrap_or_default().to_owned(),
                                aggregate_id: doc
                                    .get_str("aggregateId")
                                    .unwrap_or_default()
                                    .to_owned(),
                                aggregate_type: doc
                                    .get_str("aggregateType")
                                    .unwrap_or_default()
                                    .to_owned(),
                                event_type: doc.get_str("eventType").unwrap_or_default().to_owned(),
                                version: int(&doc, "version").unwrap_or_default() as u64,
                                position: int(&doc, "position").unwrap_or_default() as u64,
                                timestamp_ms: doc
                                    .get_datetime("timestamp")
                                    .map(|d| d.timestamp_millis())
                                    .unwrap_or_default(),
                                data: object("eventData"),
                                metadata: object("metadata"),
                            });
                        }
                        match append.already_written(&stored) {
                            Ok(first) => first,
                            Err(invalid) => return Ok(Err(invalid)),
                        }
                    };
                    written.push(first);
                }
                let total: u64 = appends
                    .iter()
                    .zip(&written)
                    .filter(|(_, first)| first.is_none())
                    .map(|(a, _)| a.events.len() as u64)
                    .sum();
                if total == 0 {
                    return Ok(Ok(Ok(written.into_iter().flatten().collect())));
                }
                for (append, _) in appends
                    .iter()
                    .zip(&written)
                    .filter(|(_, first)| first.is_none())
                {
                    let current = match versions.get(append.aggregate_id.as_str()) {
                        Some(v) => *v,
                        None => {
                            let last = events
                                .find_one(doc! { "aggregateId": &append.aggregate_id })
                                .sort(doc! { "version": -1 })
                                .projection(
                                    doc! { "version": 1, "position": 1, "refoldRejected": 1 },
                                )
                                .session(&mut session)
                                .await?;
                            if last.as_ref().is_some_and(|doc| {
                                !doc.contains_key("position") && !doc.contains_key("refoldRejected")
                            }) {
                                return Ok(Ok(Err(append.aggregate_id.clone())));
                            }
                            last.map(|doc| int(&doc, "version").unwrap_or_default() as u64)
                                .unwrap_or(0)
                        }
                    };
                    if !append.expected.accepts(current) {
                        let conflict = StoreError::Conflict {
                            aggregate_id: append.aggregate_id.clone(),
                            expected: append.expected,
                            actual: current,
                        };
                        return Ok(Err(conflict));
                    }
                    let version = current + append.events.len() as u64;
                    versions.insert(&append.aggregate_id, version);
                    after.push(version);
                }
                // The counter's write conflict serialises appends: positions commit in order.
                let mut next = take_positions(&counters, &mut session, total).await?;
                let mut results = Vec::with_capacity(appends.len());
                let mut documents = Vec::with_capacity(total as usize);
                let mut after = after.into_iter();
                for (append, first) in appends.iter().zip(written) {
                    if let Some(first) = first {
                        results.push(first);
                        continue;
                    }
                    let count = append.events.len() as u64;
                    let version = after.next().unwrap_or_default();
                    match Self::event_documents(append, version - count, next) {
                        Ok(docs) => documents.extend(docs),
                        Err(invalid) => return Ok(Err(invalid)),
                    }
                    results.push(AppendResult {
                        first_position: next,
                        last_position: next + count - 1,
                        version,
                    });
                    next += count;
                }
                match events.insert_many(documents).session(&mut session).await {
                    Ok(_) => Ok(Ok(Ok(results))),
                    Err(e)
                        if errors::code(&e) == Some(errors::DUPLICATE_KEY)
                            && !errors::is_transient_transaction(&e) =>
                    {
                        Ok(Err(duplicate(&e, &appends)))
                    }
                    Err(e) => Err(e),
                }
            })?;
            match outcome {
                Ok(results) => break results,
                Err(_) if waiting_since.elapsed() < SEQUENCER_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(stream) => {
                    return Err(StoreError::backend(
                        "append",
                        format!(
                            "the last event of stream `{stream}` was inserted by another application \
                         and has had no position for {} s: the sequencer of a running `refold \
                         run` host gives it one; is one running?",
                            SEQUENCER_WAIT.as_secs()
                        ),
                    ));
                }
            }
        };
        if let Some(last) = results.iter().map(|r: &AppendResult| r.last_position).max() {
            crate::store::ring(&self.feed, last);
        }
        Ok(results)
    }

    async fn import(&self, batch: ImportBatch) -> StoreResult<Imported> {
        let events = batch.events();
        let documents: Vec<(Document, Document)> = events
            .iter()
            .map(|imported| {
                let invalid = |e: extjson::ConvertError| {
                    StoreError::InvalidInput(format!("{}: {e}", imported.origin))
                };
                // The object as the source gave it when it was kept (`refold import` keeps it
                // for MongoDB); else its text, which a checked payload always parses.
                let object = |payload: &JsonObject| match payload.value() {
                    Some(map) => extjson::to_document(map).map_err(invalid),
                    None => match serde_json::from_str::<serde_json::Value>(payload.as_str()) {
                        Ok(serde_json::Value::Object(map)) => {
                            extjson::to_document(&map).map_err(invalid)
                        }
                        _ => Err(StoreError::InvalidInput(format!(
                            "{}: a payload is not a JSON object",
                            imported.origin
                        ))),
                    },
                };
                Ok((object(&imported.event_data)?, object(&imported.metadata)?))
            })
            .collect::<StoreResult<_>>()?;
        let (log, counters) = (self.events(), self.counters());
        let streams: Vec<&str> = events
            .iter()
            .map(|e| e.aggregate_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let outcome = transaction!(self, "import", |session| async {
            // Each stream's version, read in one query, then kept as the batch goes.
            let mut versions: HashMap<String, StreamVersion> = HashMap::new();
            let mut cursor = log
                .aggregate([
                    doc! { "$match": { "aggregateId": { "$in": &streams } } },
                    doc! { "$group": { "_id": "$aggregateId", "version": { "$max": "$version" } } },
                ])
                .session(&mut session)
                .await?;
            while let Some(doc) = cursor.next(&mut session).await.transpose()? {
                let stream = doc.get_str("_id").unwrap_or_default().to_owned();
                versions.insert(stream, int(&doc, "version").unwrap_or_default() as u64);
            }
            // An event another application inserted in one of these streams, still without a
            // position: the import would take a position before it. Refused; a host's sequencer
            // gives it one, and the import is run again.
            let waiting = log
                .find_one(doc! {
                    "aggregateId": { "$in": &streams },
                    "position": { "$exists": false },
                    "refoldRejected": { "$exists": false },
                })
                .projection(doc! { "aggregateId": 1, "version": 1 })
                .session(&mut session)
                .await?;
            if let Some(waiting) = waiting {
                return Ok(Err(StoreError::InvalidInput(format!(
                    "stream `{}` has an event another application inserted (version {}) that has \
                     no position yet: start a host (`refold run`), whose sequencer gives it one, \
                     then run the import again",
                    waiting.get_str("aggregateId").unwrap_or_default(),
                    int(&waiting, "version").unwrap_or_default()
                ))));
            }
            let mut outcome = Imported::default();
            let mut fresh = Vec::new();
            for (imported, payloads) in events.iter().zip(&documents) {
                let current = versions.get(&imported.aggregate_id).copied().unwrap_or(0);
                if imported.version <= current {
                    let stored = log
                        .find_one(doc! {
                            "aggregateId": &imported.aggregate_id,
                            "version": imported.version as i64,
                        })
                        .projection(doc! { "eventType": 1 })
                        .session(&mut session)
                        .await?
                        .unwrap_or_default();
                    let id = id_of(&stored).unwrap_or_default();
                    if let Err(differs) =
                        imported.check_present(&id, stored.get_str("eventType").unwrap_or_default())
                    {
                        return Ok(Err(differs));
                    }
                    outcome.present += 1;
                    continue;
                }
                if imported.version != current + 1 {
                    return Ok(Err(imported.gap(current)));
                }
                versions.insert(imported.aggregate_id.clone(), imported.version);
                fresh.push((imported, payloads));
            }
            if fresh.is_empty() {
                return Ok(Ok(outcome));
            }
            let first = take_positions(&counters, &mut session, fresh.len() as u64).await?;
            let documents: Vec<Document> = fresh
                .iter()
                .enumerate()
                .map(|(i, (imported, (data, metadata)))| {
                    doc! {
                        "_id": imported.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                        "position": (first + i as u64) as i64,
                        "aggregateId": &imported.aggregate_id,
                        "aggregateType": &imported.aggregate_type,
                        "eventType": &imported.event_type,
                        "eventData": data.clone(),
                        "version": imported.version as i64,
                        "timestamp": DateTime::from_millis(imported.timestamp_ms),
                        "metadata": metadata.clone(),
                    }
                })
                .collect();
            match log.insert_many(documents).session(&mut session).await {
                Ok(_) => {}
                Err(e)
                    if errors::code(&e) == Some(errors::DUPLICATE_KEY)
                        && !errors::is_transient_transaction(&e) =>
                {
                    let message = e.to_string();
                    let named = fresh
                        .iter()
                        .find(|(imported, _)| {
                            imported
                                .id
                                .as_deref()
                                .is_some_and(|id| message.contains(id))
                        })
                        .map(|(imported, _)| imported.duplicate_id());
                    return Ok(Err(named.unwrap_or_else(|| {
                        StoreError::InvalidInput(format!(
                            "an event of this batch exists already: {message}"
                        ))
                    })));
                }
                Err(e) => return Err(e),
            }
            outcome.stored = fresh.len() as u64;
            outcome.last_position = first + fresh.len() as u64 - 1;
            Ok(Ok(outcome))
        })?;
        crate::store::ring(&self.feed, outcome.last_position);
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        aggregate_id: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let cursor = self
            .events()
            // Only stamped events: one another application inserted has no position until the
            // sequencer gives it one.
            .find(doc! {
                "aggregateId": aggregate_id,
                "version": { "$gte": from_version as i64 },
                "position": { "$gte": 0 },
            })
            .sort(doc! { "version": 1 })
            .limit(limit as i64)
            .read_concern(ReadConcern::majority())
            .await
            .map_err(|e| StoreError::backend("read stream", e))?;
        collect(cursor, "read stream").await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> StoreResult<Page> {
        // Everything at or below the committed counter is committed: the counter moves in the
        // same transaction as the events. The head and the page are read in one causally
        // consistent session: the page's read carries the head's operation time
        // (`afterClusterTime`), so whichever member answers it (a new primary after a
        // failover, whose majority snapshot may still lag) waits until its snapshot holds every
        // event up to the head. Without it, a page could miss events at or below the head and
        // the cursor would move past them.
        let mut session = self
            .client
            .start_session()
            .causal_consistency(true)
            .await
            .map_err(|e| StoreError::backend("read events", e))?;
        let head = feed::read_head_in(&self.counters(), &mut session).await?;
        if head <= after {
            return Ok(Page {
                events: Vec::new(),
                scanned_to: after,
            });
        }
        let mut query = doc! { "position": { "$gt": after as i64, "$lte": head as i64 } };
        if !filter.event_types.is_empty() {
            query.insert("eventType", doc! { "$in": &filter.event_types });
        }
        if !filter.aggregate_types.is_empty() {
            query.insert("aggregateType", doc! { "$in": &filter.aggregate_types });
        }
        let limit = limit.max(1);
        let mut cursor = self
            .events()
            .find(query)
            .sort(doc! { "position": 1 })
            .limit(limit as i64)
            .read_concern(ReadConcern::majority())
            .session(&mut session)
            .await
            .map_err(|e| StoreError::backend("read events", e))?;
        let docs: Vec<Document> = cursor
            .stream(&mut session)
            .try_collect()
            .await
            .map_err(|e| StoreError::backend("read events", e))?;
        let events = docs.iter().map(to_event).collect::<StoreResult<Vec<_>>>()?;
        let scanned_to = match events.last() {
            Some(last) if events.len() == limit => last.position,
            _ => head,
        };
        Ok(Page { events, scanned_to })
    }

    async fn head(&self) -> StoreResult<Position> {
        self.head_now().await
    }

    fn feed(&self) -> watch::Receiver<Position> {
        self.feed.subscribe()
    }
}
