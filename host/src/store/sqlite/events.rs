//! The event log on SQLite.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, Row, TransactionBehavior, params, params_from_iter};
use tokio::sync::watch;

use super::SqliteStore;
use crate::domain::{
    AppendResult, EventFilter, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamVersion,
    time,
};
use crate::store::{
    EventLog, ImportBatch, Imported, Page, StoreError, StoreResult, StoredId, StreamAppend,
};

pub(super) const COLUMNS: &str =
    "position, id, aggregate_id, aggregate_type, event_type, version, timestamp_ms, data, metadata";

pub(super) fn head(conn: &Connection) -> StoreResult<Position> {
    conn.prepare_cached("SELECT coalesce(max(position), 0) FROM events")
        .and_then(|mut read| read.query_row([], |r| r.get::<_, i64>(0)))
        .map(|p| p as Position)
        .map_err(|e| StoreError::backend("read the head", e))
}

fn row_to_event(row: &Row<'_>) -> rusqlite::Result<RecordedEvent> {
    Ok(RecordedEvent {
        position: row.get::<_, i64>(0)? as Position,
        id: row.get(1)?,
        aggregate_id: row.get(2)?,
        aggregate_type: row.get(3)?,
        event_type: row.get(4)?,
        version: row.get::<_, i64>(5)? as StreamVersion,
        timestamp_ms: row.get(6)?,
        data: row.get(7)?,
        metadata: row.get(8)?,
    })
}

/// An append waiting for the group commit that takes it.
pub(super) struct PendingAppend {
    appends: Vec<StreamAppend>,
    reply: tokio::sync::oneshot::Sender<StoreResult<Vec<AppendResult>>>,
}

/// Appends waiting for a group commit, and whether a committer is at work on them. One
/// committer at a time takes the writer and commits every append queued meanwhile in one
/// transaction, then the next group, until none is left: appends that arrive during a commit
/// share the next one, and waking one thread per group instead of one per append leaves the
/// cores to the appends themselves. Between groups the committer lets the store's other writes
/// (checkpoints, generations) take the writer first.
#[derive(Default)]
pub(super) struct AppendQueue {
    waiting: Mutex<Vec<PendingAppend>>,
    committing: AtomicBool,
    /// Other writes waiting for the writer (see [`AppendQueue::other_writer`]).
    others: AtomicUsize,
}

/// Longest a committer lets other writes go first before its next group.
const GIVE_WAY: Duration = Duration::from_millis(100);

impl AppendQueue {
    /// Queue an append, and start a committer unless one is at work (it will take this one).
    fn push(
        self: &Arc<Self>,
        pending: PendingAppend,
        writer: &Arc<Mutex<Connection>>,
    ) -> StoreResult<()> {
        self.waiting
            .lock()
            .map_err(|_| StoreError::backend("append", "a previous append panicked"))?
            .push(pending);
        if !self.committing.swap(true, Ordering::SeqCst) {
            // Made before the task is spawned, so that a task the runtime drops unrun (it is
            // shutting down) still answers the queued appends.
            let committer = Committer {
                queue: Arc::clone(self),
                finished: false,
            };
            let writer = Arc::clone(writer);
            tokio::task::spawn_blocking(move || committer.commit_all(&writer));
        }
        Ok(())
    }

    /// Count a write other than appends waiting for the writer while `wait` runs.
    pub(super) fn other_writer<T>(&self, wait: impl FnOnce() -> T) -> T {
        self.others.fetch_add(1, Ordering::SeqCst);
        let taken = wait();
        self.others.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    /// Take every queued append.
    fn take(&self) -> Vec<PendingAppend> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The committer at work. Dropped without finishing (its task never ran, or a commit panicked),
/// it answers every queued append with an error and lets the next append start another.
struct Committer {
    queue: Arc<AppendQueue>,
    finished: bool,
}

impl Committer {
    /// Commit the queued appends a group at a time, taking the writer for each group.
    fn commit_all(mut self, writer: &Mutex<Connection>) {
        let queue = Arc::clone(&self.queue);
        loop {
            let group = queue.take();
            if group.is_empty() {
                queue.committing.store(false, Ordering::SeqCst);
                // An append queued between the take and the store found a committer at work
                // and started none: look again, unless another committer has started since.
                let more = queue
                    .waiting
                    .lock()
                    .map_or(true, |waiting| !waiting.is_empty());
                if !more || queue.committing.swap(true, Ordering::SeqCst) {
                    self.finished = true;
                    return;
                }
                continue;
            }
            let gave_way = Instant::now();
            while queue.others.load(Ordering::SeqCst) > 0 && gave_way.elapsed() < GIVE_WAY {
                std::thread::sleep(Duration::from_micros(100));
            }
            match writer.lock() {
                Ok(mut conn) => commit_group(&mut conn, group),
                Err(_) => answer(group, "a previous writer panicked"),
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.queue.committing.store(false, Ordering::SeqCst);
        answer(
            self.queue.take(),
            "the group commit stopped (the host is shutting down, or a commit panicked)",
        );
    }
}

/// Answer every append of `group` with a failure of the store.
fn answer(group: Vec<PendingAppend>, why: &str) {
    for pending in group {
        let _ = pending
            .reply
            .send(Err(StoreError::backend("append", why.to_owned())));
    }
}

/// Commit a group of appends in one transaction (one `fsync` for all), each under a savepoint of
/// its own: an append that fails (a conflict) is rolled back alone and answered with its error;
/// the others are stored, gap-free, in the order they came. If the transaction itself fails,
/// every append of the group is answered with that failure and none is stored.
fn commit_group(conn: &mut Connection, group: Vec<PendingAppend>) {
    let outcome = (|| {
        // Flushed whatever the writer did before (see `schema::UNFLUSHED`).
        conn.execute_batch(super::schema::FLUSHED)
            .map_err(|e| StoreError::backend("begin append", e))?;
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::backend("begin append", e))?;
        let mut results = Vec::with_capacity(group.len());
        for pending in &group {
            let savepoint = tx
                .savepoint()
                .map_err(|e| StoreError::backend("begin an append of the group", e))?;
            let result = pending
                .appends
                .iter()
                .map(|a| match already_written(&savepoint, a)? {
                    Some(first) => Ok(first),
                    None => append_stream(&savepoint, &a.aggregate_id, a.expected, &a.events),
                })
                .collect::<StoreResult<Vec<_>>>();
            if result.is_ok() {
                savepoint
                    .commit()
                    .map_err(|e| StoreError::backend("end an append of the group", e))?;
            }
            results.push(result);
        }
        tx.commit()
            .map_err(|e| StoreError::backend("commit append", e))?;
        Ok::<_, StoreError>(results)
    })();
    match outcome {
        Ok(results) => {
            for (pending, result) in group.into_iter().zip(results) {
                let _ = pending.reply.send(result);
            }
        }
        Err(error) => {
            let message = error.to_string();
            for pending in group {
                let _ = pending
                    .reply
                    .send(Err(StoreError::backend("append", message.clone())));
            }
        }
    }
}

/// The first result of `append` when it was written before (see `StreamAppend::already_written`).
fn already_written(tx: &Connection, append: &StreamAppend) -> StoreResult<Option<AppendResult>> {
    let ids = append.explicit_ids();
    if ids.is_empty() {
        return Ok(None);
    }
    let mut find = tx
        .prepare_cached(
            "SELECT id, aggregate_id, aggregate_type, event_type, version, position, timestamp_ms, data, metadata FROM events WHERE id = ?1",
        )
        .map_err(|e| StoreError::backend("prepare the id lookup", e))?;
    let mut stored = Vec::new();
    for id in ids {
        let found = find
            .query_map([id], |r| {
                let json = |text: String| serde_json::from_str(&text).unwrap_or_default();
                Ok(StoredId {
                    id: r.get(0)?,
                    aggregate_id: r.get(1)?,
                    aggregate_type: r.get(2)?,
                    event_type: r.get(3)?,
                    version: r.get::<_, i64>(4)? as StreamVersion,
                    position: r.get::<_, i64>(5)? as Position,
                    timestamp_ms: r.get(6)?,
                    data: json(r.get(7)?),
                    metadata: json(r.get(8)?),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| StoreError::backend("look event ids up", e))?;
        stored.extend(found);
    }
    append.already_written(&stored)
}

fn append_stream(
    tx: &Connection,
    aggregate_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> StoreResult<AppendResult> {
    let current: StreamVersion = tx
        .prepare_cached("SELECT coalesce(max(version), 0) FROM events WHERE aggregate_id = ?1")
        .and_then(|mut read| read.query_row([aggregate_id], |r| r.get::<_, i64>(0)))
        .map_err(|e| StoreError::backend("read the stream version", e))?
        as StreamVersion;
    if !expected.accepts(current) {
        return Err(StoreError::Conflict {
            aggregate_id: aggregate_id.to_owned(),
            expected,
            actual: current,
        });
    }
    let head = head(tx)?;
    let now = time::now_millis();
    {
        let mut insert = tx
            .prepare_cached(&format!(
                "INSERT INTO events ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))
            .map_err(|e| StoreError::backend("prepare append", e))?;
        for (i, event) in events.iter().enumerate() {
            let offset = i as u64 + 1;
            let id = event
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            insert
                .execute(params![
                    (head + offset) as i64,
                    id,
                    aggregate_id,
                    event.aggregate_type,
                    event.event_type,
                    (current + offset) as i64,
                    event.timestamp_ms.unwrap_or(now),
                    event.event_data.to_string(),
                    event.metadata.to_string(),
                ])
                .map_err(|e| match e.sqlite_error_code() {
                    Some(rusqlite::ErrorCode::ConstraintViolation) => {
                        StoreError::InvalidInput(format!("event id `{id}` already exists"))
                    }
                    _ => StoreError::backend("append", e),
                })?;
        }
    }
    let count = events.len() as u64;
    Ok(AppendResult {
        first_position: head + 1,
        last_position: head + count,
        version: current + count,
    })
}

fn read_all_blocking(
    conn: &mut Connection,
    after: Position,
    limit: usize,
    filter: &EventFilter,
) -> StoreResult<Page> {
    // The head and the page come from one read transaction, so `scanned_to` is exact.
    let tx = conn
        .transaction()
        .map_err(|e| StoreError::backend("begin read", e))?;
    let head = head(&tx)?;
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE position > ?1 AND position <= ?2");
    let mut args: Vec<rusqlite::types::Value> = vec![(after as i64).into(), (head as i64).into()];
    for (column, values) in [
        ("event_type", &filter.event_types),
        ("aggregate_type", &filter.aggregate_types),
    ] {
        if values.is_empty() {
            continue;
        }
        let marks: Vec<String> = (0..values.len())
            .map(|i| format!("?{}", args.len() + i + 1))
            .collect();
        // Unary `+` keeps SQLite on the position (rowid) order: through the
        // `(event_type, position)` index it would collect and sort every later match for each
        // page, which makes a replay quadratic.
        sql.push_str(&format!(" AND +{column} IN ({})", marks.join(", ")));
        args.extend(
            values
                .iter()
                .map(|v| rusqlite::types::Value::from(v.clone())),
        );
    }
    sql.push_str(&format!(" ORDER BY position LIMIT {limit}"));
    let events = {
        let mut stmt = tx
            .prepare_cached(&sql)
            .map_err(|e| StoreError::backend("prepare read", e))?;
        stmt.query_map(params_from_iter(args), row_to_event)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| StoreError::backend("read events", e))?
    };
    let scanned_to = match events.last() {
        Some(last) if events.len() == limit => last.position,
        _ => head.max(after),
    };
    Ok(Page { events, scanned_to })
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn append_all(&self, appends: Vec<StreamAppend>) -> StoreResult<Vec<AppendResult>> {
        for append in &appends {
            append.validate()?;
        }
        // Group commit ([`AppendQueue`]): the append joins the queue and waits for the committer
        // to answer it.
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.appends
            .push(PendingAppend { appends, reply }, &self.writer)?;
        let results = answer.await.map_err(|_| {
            StoreError::backend("append", "the group commit ended without answering")
        })??;
        if let Some(last) = results.iter().map(|r: &AppendResult| r.last_position).max() {
            crate::store::ring(&self.feed, last);
        }
        Ok(results)
    }

    async fn import(&self, batch: ImportBatch) -> StoreResult<Imported> {
        let state = self.import.clone();
        let outcome = self
            .with_writer(move |conn| super::import::import_blocking(conn, &batch, &state))
            .await?;
        crate::store::ring(&self.feed, outcome.last_position);
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        aggregate_id: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let aggregate_id = aggregate_id.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM events WHERE aggregate_id = ?1 AND version >= ?2 ORDER BY version LIMIT ?3"
                ))
                .map_err(|e| StoreError::backend("prepare stream read", e))?;
            stmt.query_map(params![aggregate_id, from_version as i64, limit as i64], row_to_event)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| StoreError::backend("read stream", e))
        })
        .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> StoreResult<Page> {
        let filter = filter.clone();
        self.with_reader(move |conn| read_all_blocking(conn, after, limit.max(1), &filter))
            .await
    }

    async fn head(&self) -> StoreResult<Position> {
        self.with_reader(|conn| head(conn)).await
    }

    fn feed(&self) -> watch::Receiver<Position> {
        self.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn tick(stream: &str, expected: ExpectedVersion) -> Vec<StreamAppend> {
        vec![StreamAppend {
            aggregate_id: stream.into(),
            expected,
            events: vec![NewEvent {
                id: None,
                aggregate_type: "Thing".into(),
                event_type: "Tick".into(),
                event_data: json!({}),
                metadata: json!({}),
                timestamp_ms: None,
            }],
        }]
    }

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("refold.db"))
            .await
            .expect("open")
    }

    /// A committer dropped before it ran (its runtime shutting down) or while it panicked
    /// answers every queued append with an error and lets the next append start a committer;
    /// none is left waiting for good.
    #[tokio::test]
    async fn a_committer_that_never_runs_answers_the_queued_appends() {
        let queue = Arc::new(AppendQueue::default());
        let (reply, answer) = tokio::sync::oneshot::channel();
        queue.waiting.lock().expect("queue").push(PendingAppend {
            appends: tick("a", ExpectedVersion::NoStream),
            reply,
        });
        queue.committing.store(true, Ordering::SeqCst);
        drop(Committer {
            queue: Arc::clone(&queue),
            finished: false,
        });
        let answered = answer.await.expect("answered");
        assert!(
            matches!(&answered, Err(e) if e.to_string().contains("group commit stopped")),
            "{answered:?}"
        );
        assert!(!queue.committing.load(Ordering::SeqCst));
    }

    /// One group commit: the append that conflicts is rolled back alone and answered with its
    /// conflict; those before and after it are stored, with no gap where it would have been.
    #[tokio::test]
    async fn a_group_commit_rolls_back_only_the_append_that_fails() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = store(&dir).await;
        store
            .append_all(tick("taken", ExpectedVersion::NoStream))
            .await
            .expect("append");
        let mut answers = Vec::new();
        let group: Vec<PendingAppend> = ["a", "taken", "b"]
            .into_iter()
            .map(|stream| {
                let (reply, answer) = tokio::sync::oneshot::channel();
                answers.push(answer);
                PendingAppend {
                    appends: tick(stream, ExpectedVersion::NoStream),
                    reply,
                }
            })
            .collect();
        store
            .with_writer(move |conn| {
                commit_group(conn, group);
                Ok(())
            })
            .await
            .expect("group commit");
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.expect("answered"));
        }
        let first = |r: &StoreResult<Vec<AppendResult>>| {
            r.as_ref().ok().map(|results| results[0].first_position)
        };
        assert_eq!(first(&results[0]), Some(2));
        assert!(
            matches!(&results[1], Err(StoreError::Conflict { aggregate_id, .. }) if aggregate_id == "taken"),
            "{:?}",
            results[1]
        );
        assert_eq!(first(&results[2]), Some(3));
        assert_eq!(store.head().await.expect("head"), 3);
    }

    /// Many appenders at once: each is answered with its own position, and the log is
    /// gap-free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_each_answered_and_gap_free() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = Arc::new(store(&dir).await);
        let appenders: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .append_all(tick(&format!("s-{i}"), ExpectedVersion::NoStream))
                        .await
                        .expect("append")[0]
                        .first_position
                })
            })
            .collect();
        let mut positions = BTreeSet::new();
        for appender in appenders {
            positions.insert(appender.await.expect("appender"));
        }
        assert_eq!(positions, (1..=64).collect::<BTreeSet<_>>());
        assert_eq!(store.head().await.expect("head"), 64);
    }
}
