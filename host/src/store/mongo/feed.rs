//! The MongoDB change feed: one change stream on `events` per store, as a doorbell.
//!
//! The stream only wakes projectors; they read by position. So when the stream fails for any
//! reason (network error, a resume token that is gone: `ChangeStreamHistoryLost`, an
//! `invalidate` after the collection is dropped) the feed simply opens a new stream and rings
//! with the current head: nothing can be missed. A slow poll of the head backs the stream up.

use std::sync::Weak;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReadConcern;
use mongodb::{ClientSession, Collection};
use tokio::sync::watch;

use crate::domain::Position;
use crate::store::{StoreError, StoreResult, ring};

/// How often the head is polled in case the change stream is silent when it should not be.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The committed head: the position counter, read with majority read concern.
pub(super) async fn read_head(counters: &Collection<Document>) -> StoreResult<Position> {
    let counter = counters
        .find_one(doc! { "_id": "events" })
        .read_concern(ReadConcern::majority())
        .await
        .map_err(|e| StoreError::backend("read the head", e))?;
    Ok(head_of(counter.as_ref()))
}

/// [`read_head`] in a session, so that the session's later reads are causally after it.
pub(super) async fn read_head_in(
    counters: &Collection<Document>,
    session: &mut ClientSession,
) -> StoreResult<Position> {
    let counter = counters
        .find_one(doc! { "_id": "events" })
        .read_concern(ReadConcern::majority())
        .session(session)
        .await
        .map_err(|e| StoreError::backend("read the head", e))?;
    Ok(head_of(counter.as_ref()))
}

fn head_of(counter: Option<&Document>) -> Position {
    match counter.and_then(|c| c.get("position")) {
        Some(Bson::Int64(p)) => *p as Position,
        Some(Bson::Int32(p)) => *p as Position,
        _ => 0,
    }
}

pub(super) fn spawn(
    events: Collection<Document>,
    counters: Collection<Document>,
    feed: Weak<watch::Sender<Position>>,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            if feed.strong_count() == 0 {
                return;
            }
            let stream = events
                .watch()
                .pipeline([doc! { "$match": { "operationType": "insert" } }])
                .max_await_time(POLL_INTERVAL)
                .await;
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "change feed: cannot open the change stream; polling the head meanwhile");
                    poll_once(&counters, &feed).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            // Events committed while no stream was open are found by this read.
            poll_once(&counters, &feed).await;
            let mut last_poll = tokio::time::Instant::now();
            loop {
                let Some(sender) = feed.upgrade() else { return };
                // Returns within `max_await_time` when nothing happens, keeping empty batches'
                // resume tokens.
                match stream.next_if_any().await {
                    Ok(Some(change)) => {
                        if let Some(Bson::Int64(position)) = change
                            .full_document
                            .as_ref()
                            .and_then(|d| d.get("position"))
                        {
                            ring(&sender, *position as Position);
                        }
                    }
                    Ok(None) if !stream.is_alive() => {
                        tracing::info!("change feed: stream ended (invalidate); reopening");
                        break;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "change feed: stream failed; reopening and re-reading by position");
                        break;
                    }
                }
                drop(sender);
                if last_poll.elapsed() >= POLL_INTERVAL {
                    poll_once(&counters, &feed).await;
                    last_poll = tokio::time::Instant::now();
                }
            }
        }
    });
}

async fn poll_once(counters: &Collection<Document>, feed: &Weak<watch::Sender<Position>>) {
    if let (Ok(head), Some(sender)) = (read_head(counters).await, feed.upgrade()) {
        ring(&sender, head);
    }
}
