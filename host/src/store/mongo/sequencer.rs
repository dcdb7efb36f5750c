//! The sequencer: positions for events that other applications insert into `events` (the way
//! seed 000's `MongoEventStore::appendEvents` does: a transaction, `insertMany`, no position).
//!
//! It follows the change stream of `events`, which gives inserts in commit order, and gives each
//! insert without a position the next one, with the position counter, in a transaction: so
//! positions stay gap-free and every reader by position sees an event only once it has one.
//! Projectors only ever read stamped events.
//!
//! - **One active per store.** A host that runs projections (`refold run`) runs a sequencer; they
//!   share a lease in `counters` (`_id: "sequencer"`): an owner, an epoch and the time of its last
//!   renewal. A host takes the lease over when it has not been renewed for [`LEASE`], and the
//!   epoch moves on; every stamping transaction checks owner and epoch, so a sequencer that lost
//!   its lease (paused, cut off) can never stamp again.
//! - **Where it is.** The change stream's resume token is saved with the lease in the same
//!   transaction as the positions it gave (and with each renewal while nothing waits), so a
//!   sequencer that takes over (or a restart) goes on from exactly there. With no token (the
//!   first start, a token the oplog no longer holds, or a first pass cut short: its token is
//!   saved only once it is complete), it
//!   opens the stream and then stamps every event still without a position, in time order,
//!   before following the stream: events the stream then shows again are stamped already and
//!   skipped.
//! - **Per-stream order.** A document gets its position after the earlier versions of its stream
//!   that still wait for one (a catch-up in time order, with application servers whose clocks
//!   differ, may come to them later). A Refold append to a stream whose last event has no
//!   position yet waits for the sequencer (see `events.rs`), so an append never takes a position
//!   before an earlier version of its stream.
//! - **Malformed documents.** A document the log cannot hold as an event (a missing stream, a
//!   version that is not a whole number, a payload that is not a document...) is marked with
//!   `refoldRejected` (the reason) instead of a position, logged, and passed over: the sequencer
//!   goes on, and nothing else waits for it. The application's bug stays visible in the
//!   collection, and projections keep serving everyone else's events; the stream's versions then
//!   show the hole. An operator brings it in by deleting it and inserting the fixed document:
//!   the insert gets the next position (at the end of the log).

use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::options::ReadConcern;
use tokio::sync::watch;

use super::{MongoStore, errors, transaction};
use crate::domain::{NewEvent, Position, extjson, time};
use crate::store::{StoreError, StoreResult};

/// How long a lease lasts without renewal before another host may take it.
pub const LEASE: Duration = Duration::from_secs(5);

/// Most inserts stamped in one transaction.
const BATCH: usize = 500;

/// The id of the lease document in `counters`.
const LEASE_ID: &str = "sequencer";

/// A document's stream version, if it is a whole number.
fn version_of(doc: &Document) -> Option<i64> {
    match doc.get("version")? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        _ => None,
    }
}

/// Why a document cannot be an event of the log, or `None` when it can.
pub(super) fn malformed(doc: &Document) -> Option<String> {
    let text = |key: &str| match doc.get(key) {
        Some(Bson::String(text)) => Ok(text.clone()),
        Some(_) => Err(format!("`{key}` is not a string")),
        None => Err(format!("`{key}` is missing")),
    };
    let object = |key: &str| match doc.get(key) {
        None | Some(Bson::Null) => Ok(serde_json::Value::Object(Default::default())),
        // PHP writes an empty array for an empty payload.
        Some(Bson::Array(items)) if items.is_empty() => {
            Ok(serde_json::Value::Object(Default::default()))
        }
        Some(Bson::Document(inner)) => Ok(serde_json::Value::Object(extjson::to_map(inner))),
        Some(_) => Err(format!("`{key}` is not a document")),
    };
    let check = || -> Result<(), String> {
        match doc.get("_id") {
            Some(Bson::String(_) | Bson::ObjectId(_)) => {}
            _ => return Err("`_id` is not a string or an ObjectId".into()),
        }
        let aggregate_id = text("aggregateId")?;
        crate::store::append::validate_stream(&aggregate_id).map_err(|e| e.to_string())?;
        match doc.get("version") {
            Some(Bson::Int32(v)) if *v >= 1 => {}
            Some(Bson::Int64(v)) if *v >= 1 => {}
            _ => return Err("`version` is not a whole number of 1 or more".into()),
        }
        let timestamp_ms = match doc.get("timestamp") {
            Some(Bson::DateTime(date)) => date.timestamp_millis(),
            _ => return Err("`timestamp` is not a date".into()),
        };
        let event = NewEvent {
            id: None,
            aggregate_type: text("aggregateType")?,
            event_type: text("eventType")?,
            event_data: object("eventData")?,
            metadata: object("metadata")?,
            timestamp_ms: Some(timestamp_ms),
        };
        crate::store::append::validate_event(&aggregate_id, &event).map_err(|e| e.to_string())
    };
    check().err()
}

/// The sequencer's task: take the lease when it is free, stamp while it is held, and try again
/// after any failure. Ends when the store is dropped (`alive` is gone) or `stop` is set; on
/// `stop` it gives the lease up, so another host need not wait for it to expire.
pub(super) async fn run(
    store: MongoStore,
    owner: String,
    alive: Weak<watch::Sender<Position>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if alive.strong_count() == 0 || *stop.borrow() {
            break;
        }
        let outcome = tokio::select! {
            outcome = hold(&store, &owner, &alive) => outcome,
            _ = stop.changed() => break,
        };
        match outcome {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, "sequencer: stopped; trying again");
                backoff = (backoff * 2).min(LEASE);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
    }
    if let Err(error) = release(&store, &owner).await {
        tracing::warn!(%error, "sequencer: cannot give the lease up; it expires by itself");
    }
}

/// The lease as held: its epoch.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
}

/// Take the lease if it is free or expired; `None` while another owner holds it.
async fn acquire(store: &MongoStore, owner: &str) -> StoreResult<Option<(Held, Option<Bson>)>> {
    let counters = store.counters();
    let failed = |e| StoreError::backend("sequencer lease", e);
    let now = time::now_millis();
    let lease = counters
        .find_one(doc! { "_id": LEASE_ID })
        .read_concern(ReadConcern::majority())
        .await
        .map_err(failed)?;
    let Some(lease) = lease else {
        let created = counters
            .insert_one(doc! { "_id": LEASE_ID, "owner": owner, "epoch": 1i64, "renewedAtMs": now })
            .await;
        return match created {
            Ok(_) => Ok(Some((Held { epoch: 1 }, None))),
            Err(e) if errors::code(&e) == Some(errors::DUPLICATE_KEY) => Ok(None),
            Err(e) => Err(failed(e)),
        };
    };
    let epoch = match lease.get("epoch") {
        Some(Bson::Int64(e)) => *e,
        Some(Bson::Int32(e)) => i64::from(*e),
        _ => 0,
    };
    let renewed = match lease.get("renewedAtMs") {
        Some(Bson::Int64(ms)) => *ms,
        _ => 0,
    };
    let token = lease.get("resumeToken").cloned();
    let expired = now.saturating_sub(renewed) > LEASE.as_millis() as i64;
    if lease.get_str("owner").ok() != Some(owner) && !expired {
        return Ok(None);
    }
    let taken = counters
        .update_one(
            doc! { "_id": LEASE_ID, "epoch": epoch },
            doc! { "$set": { "owner": owner, "renewedAtMs": now, "epoch": epoch + 1 } },
        )
        .await
        .map_err(failed)?;
    Ok((taken.modified_count == 1).then_some((Held { epoch: epoch + 1 }, token)))
}

/// Give the lease up (it expires at once), if this owner holds it.
async fn release(store: &MongoStore, owner: &str) -> StoreResult<()> {
    store
        .counters()
        .update_one(
            doc! { "_id": LEASE_ID, "owner": owner },
            doc! { "$set": { "renewedAtMs": 0i64 } },
        )
        .await
        .map_err(|e| StoreError::backend("sequencer lease", e))?;
    Ok(())
}

/// Renew the lease outside a stamping transaction, saving `token` (every change before it has
/// been dealt with), so a restart does not go back further than it must; `false` when the lease
/// was lost.
async fn renew(
    store: &MongoStore,
    owner: &str,
    held: Held,
    token: Option<&ResumeToken>,
) -> StoreResult<bool> {
    let mut set = doc! { "renewedAtMs": time::now_millis() };
    if let Some(token) = token {
        let token = mongodb::bson::to_bson(token)
            .map_err(|e| StoreError::backend("sequencer resume token", e))?;
        set.insert("resumeToken", token);
    }
    let renewed = store
        .counters()
        .update_one(
            doc! { "_id": LEASE_ID, "owner": owner, "epoch": held.epoch },
            doc! { "$set": set },
        )
        .await
        .map_err(|e| StoreError::backend("sequencer lease", e))?;
    Ok(renewed.matched_count == 1)
}

/// Hold the lease and stamp until it is lost or something fails.
async fn hold(
    store: &MongoStore,
    owner: &str,
    alive: &Weak<watch::Sender<Position>>,
) -> StoreResult<()> {
    let (held, token) = loop {
        if alive.strong_count() == 0 {
            return Ok(());
        }
        if let Some(taken) = acquire(store, owner).await? {
            break taken;
        }
        tokio::time::sleep(LEASE / 5).await;
    };
    tracing::info!(epoch = held.epoch, "sequencer: holding the lease");
    let token: Option<ResumeToken> = token.and_then(|t| mongodb::bson::from_bson(t).ok());
    // Only inserts without a position reach the sequencer: Refold's own appends carry theirs.
    let watch = |token: Option<ResumeToken>| async move {
        store
            .events()
            .watch()
            .pipeline([doc! { "$match": {
                "operationType": "insert",
                "fullDocument.position": { "$exists": false },
            } }])
            .max_await_time(LEASE / 5)
            .batch_size(BATCH as u32)
            .resume_after(token)
            .await
    };
    let mut stream = match watch(token.clone()).await {
        Ok(stream) => stream,
        Err(error) if token.is_some() && errors::is_history_lost(&error) => {
            tracing::warn!(%error, "sequencer: the oplog no longer holds where it was; giving a position to every event without one, in time order, then following");
            let stream = watch(None)
                .await
                .map_err(|e| StoreError::backend("sequencer change stream", e))?;
            catch_up(store, owner, held, stream.resume_token(), alive).await?;
            stream
        }
        Err(error) => return Err(StoreError::backend("sequencer change stream", error)),
    };
    if token.is_none() {
        catch_up(store, owner, held, stream.resume_token(), alive).await?;
    }
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        if alive.strong_count() == 0 {
            return Ok(());
        }
        // Up to a batch of inserts, or what came within a fifth of the lease: the lease is
        // renewed at least that often, busy or not.
        let mut inserts = Vec::new();
        let gathering = tokio::time::Instant::now();
        while inserts.len() < BATCH && gathering.elapsed() < LEASE / 5 {
            let change: Option<ChangeStreamEvent<Document>> = stream
                .next_if_any()
                .await
                .map_err(|e| StoreError::backend("sequencer change stream", e))?;
            match change {
                Some(change) => inserts.extend(change.full_document),
                None => break,
            }
        }
        if !stream.is_alive() {
            return Err(StoreError::backend(
                "sequencer change stream",
                "the stream ended (the collection was dropped or renamed)",
            ));
        }
        // Everything up to this token has been seen; once stamped (or when nothing came), a
        // restart may go on from here.
        let token = stream.resume_token();
        let kept = if !inserts.is_empty() {
            stamp(store, owner, held, &inserts, token.as_ref(), alive).await?
        } else if last_renewal.elapsed() >= LEASE / 5 {
            renew(store, owner, held, token.as_ref()).await?
        } else {
            continue;
        };
        if !kept {
            tracing::warn!("sequencer: lost the lease");
            return Ok(());
        }
        last_renewal = tokio::time::Instant::now();
    }
}

/// Stamp every event still without a position (and not rejected), in time order: the first
/// start on a collection other applications wrote, or a start whose resume token is gone.
/// `token` is the new stream's start, saved with the stamps, so that a restart follows the
/// stream from there.
async fn catch_up(
    store: &MongoStore,
    owner: &str,
    held: Held,
    token: Option<ResumeToken>,
    alive: &Weak<watch::Sender<Position>>,
) -> StoreResult<()> {
    // The lease is renewed beside the pass (its first read may take longer than the lease);
    // stamping still checks owner and epoch in each transaction.
    let renewal = {
        let (store, owner) = (store.clone(), owner.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 5).await;
                if !matches!(renew(&store, &owner, held, None).await, Ok(true)) {
                    return;
                }
            }
        })
    };
    let passed = first_pass(store, owner, held, alive).await;
    renewal.abort();
    passed?;
    // Only now is everything before the stream's start stamped: a restart may begin there.
    if !renew(store, owner, held, token.as_ref()).await? {
        return Err(StoreError::backend("sequencer catch-up", "lost the lease"));
    }
    Ok(())
}

/// [`catch_up`]'s pass over the waiting documents. It saves no resume token: a pass cut short
/// must be made again by the next holder.
async fn first_pass(
    store: &MongoStore,
    owner: &str,
    held: Held,
    alive: &Weak<watch::Sender<Position>>,
) -> StoreResult<()> {
    use futures_util::TryStreamExt;
    // One pass: a single cursor over every waiting document (the collection has no index on a
    // missing field, so each query would read all of it), stamped a batch at a time. Documents
    // stamped meanwhile from elsewhere are passed over by the stamp itself.
    let mut waiting = store
        .events()
        .find(doc! { "position": { "$exists": false }, "refoldRejected": { "$exists": false } })
        .sort(doc! { "timestamp": 1, "_id": 1 })
        .allow_disk_use(true)
        .batch_size(BATCH as u32)
        .await
        .map_err(|e| StoreError::backend("sequencer catch-up", e))?;
    let mut docs = Vec::with_capacity(BATCH);
    loop {
        let next = waiting
            .try_next()
            .await
            .map_err(|e| StoreError::backend("sequencer catch-up", e))?;
        let done = next.is_none();
        docs.extend(next);
        if docs.len() >= BATCH || done {
            if !stamp(store, owner, held, &docs, None, alive).await? {
                return Err(StoreError::backend("sequencer catch-up", "lost the lease"));
            }
            docs.clear();
        }
        if done {
            return Ok(());
        }
    }
}

/// In one transaction: check the lease is still this owner's at this epoch (and renew it, with
/// the resume token), give each document without a position the next one (or mark it rejected),
/// and move the position counter. `false` when the lease was lost: nothing is stamped then.
async fn stamp(
    store: &MongoStore,
    owner: &str,
    held: Held,
    docs: &[Document],
    token: Option<&ResumeToken>,
    alive: &Weak<watch::Sender<Position>>,
) -> StoreResult<bool> {
    let token = match token {
        Some(token) => Some(
            mongodb::bson::to_bson(token)
                .map_err(|e| StoreError::backend("sequencer resume token", e))?,
        ),
        None => None,
    };
    let (events, counters) = (store.events(), store.counters());
    let stamped = transaction!(store, "sequencer stamp", |session| async {
        let mut set = doc! { "renewedAtMs": time::now_millis() };
        if let Some(token) = &token {
            set.insert("resumeToken", token.clone());
        }
        let lease = counters
            .update_one(
                doc! { "_id": LEASE_ID, "owner": owner, "epoch": held.epoch },
                doc! { "$set": set },
            )
            .session(&mut session)
            .await?;
        if lease.matched_count == 0 {
            return Ok(Ok(None));
        }
        let counter = counters
            .find_one(doc! { "_id": "events" })
            .session(&mut session)
            .await?;
        let head = counter
            .as_ref()
            .and_then(|c| match c.get("position") {
                Some(Bson::Int64(p)) => Some(*p),
                Some(Bson::Int32(p)) => Some(i64::from(*p)),
                _ => None,
            })
            .unwrap_or(0);
        let mut next = head + 1;
        // Each document after the earlier versions of its stream that still wait (a catch-up in
        // time order, with application servers whose clocks differ, may come to them later):
        // every waiting event of the batch's streams, read in one query.
        let streams: Vec<&str> = docs
            .iter()
            .filter_map(|d| d.get_str("aggregateId").ok())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut waiting: HashMap<String, Vec<Document>> = HashMap::new();
        let highest = docs.iter().filter_map(version_of).max().unwrap_or(0);
        let mut cursor = events
            .find(doc! {
                "aggregateId": { "$in": &streams },
                "version": { "$lt": highest },
                "position": { "$exists": false },
                "refoldRejected": { "$exists": false },
            })
            .sort(doc! { "aggregateId": 1, "version": 1 })
            .session(&mut session)
            .await?;
        while let Some(found) = cursor.next(&mut session).await.transpose()? {
            if let Ok(stream) = found.get_str("aggregateId") {
                waiting.entry(stream.to_owned()).or_default().push(found);
            }
        }
        let mut ordered: Vec<&Document> = Vec::with_capacity(docs.len());
        let mut placed: HashSet<String> = HashSet::new();
        for doc in docs {
            if let (Ok(stream), Some(version)) = (doc.get_str("aggregateId"), version_of(doc)) {
                for earlier in waiting.get(stream).into_iter().flatten() {
                    if version_of(earlier).is_some_and(|v| v < version)
                        && placed.insert(
                            earlier
                                .get("_id")
                                .map(|id| id.to_string())
                                .unwrap_or_default(),
                        )
                    {
                        ordered.push(earlier);
                    }
                }
            }
            if placed.insert(doc.get("_id").map(|id| id.to_string()).unwrap_or_default()) {
                ordered.push(doc);
            }
        }
        for doc in ordered {
            let Some(id) = doc.get("_id") else { continue };
            let unstamped = doc! {
                "_id": id.clone(),
                "position": { "$exists": false },
                "refoldRejected": { "$exists": false },
            };
            let update = match malformed(doc) {
                Some(reason) => {
                    tracing::warn!(id = %id, %reason, "sequencer: a document in `events` is not an event; marked `refoldRejected` and passed over");
                    doc! { "$set": { "refoldRejected": reason } }
                }
                None => doc! { "$set": { "position": next } },
            };
            let rejected = update
                .get_document("$set")
                .is_ok_and(|s| s.contains_key("refoldRejected"));
            let done = events
                .update_one(unstamped, update)
                .session(&mut session)
                .await?;
            if done.modified_count == 1 && !rejected {
                next += 1;
            }
        }
        if next > head + 1 {
            counters
                .update_one(
                    doc! { "_id": "events" },
                    doc! { "$set": { "position": next - 1 } },
                )
                .upsert(true)
                .session(&mut session)
                .await?;
        }
        Ok(Ok(Some(next - 1)))
    })?;
    match stamped {
        Some(last) => {
            if let Some(feed) = alive.upgrade() {
                crate::store::ring(&feed, last as Position);
            }
            Ok(true)
        }
        None => Ok(false),
    }
}
