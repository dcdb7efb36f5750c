//! An import into the embedded store: batches of an existing history, each in one transaction,
//! with a larger page cache, the log flushed at the end and copied into the database file beside
//! the next batch.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::events::{COLUMNS, head};
use crate::domain::StreamVersion;
use crate::store::{FastMap, ImportBatch, Imported, StoreError, StoreResult};

/// What an import keeps between its batches: the copy of the write-ahead log into the database
/// file (a passive checkpoint on a connection of its own) running on a thread beside the next
/// batch, and each stream's version as the import's committed batches left it, so a stream it
/// has written needs no read of its version again.
#[derive(Clone, Default)]
pub(super) struct ImportState {
    copy: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// A lower bound of each stream's version: a version in the store never goes down, and only
    /// committed batches are recorded. Anyone else's append to the stream since is found by the
    /// insert's collision.
    versions: Arc<std::sync::Mutex<FastMap<String, StreamVersion>>>,
}

impl ImportState {
    /// Wait for the copy under way, if any.
    fn wait(&self) {
        let running = self.copy.lock().ok().and_then(|mut slot| slot.take());
        if let Some(running) = running {
            let _ = running.join();
        }
    }

    /// Start copying what is committed, unless a copy is still under way.
    fn start(&self, path: String) {
        let Ok(mut slot) = self.copy.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|running| !running.is_finished()) {
            return;
        }
        *slot = Some(std::thread::spawn(move || {
            let copied = Connection::open(&path).and_then(|conn| {
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            });
            if let Err(error) = copied {
                tracing::debug!(%error, "import: copying the log into the database failed; the next checkpoint does it");
            }
        }));
    }
}

/// Store a batch of an import in one transaction (see [`ImportedEvent`]).
pub(super) fn import_blocking(
    conn: &mut Connection,
    events: &ImportBatch,
    state: &ImportState,
) -> StoreResult<Imported> {
    // An import writes all over the indexes of ids and streams: with SQLite's default cache of
    // 2 MB, most inserts would read and write pages again. A larger cache for the import's
    // transactions, released after.
    let cache: i64 = conn
        .query_row("PRAGMA cache_size", [], |r| r.get(0))
        .map_err(|e| StoreError::backend("import", e))?;
    let checkpoint: i64 = conn
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .map_err(|e| StoreError::backend("import", e))?;
    // Nor does the commit copy the log into the database file, which would hold the next batch
    // up: a thread of its own does, beside the next batch, and the last batch waits for it.
    // Nor is the log flushed to the disk at each commit: a power cut may take the batches since
    // the last flush (never part of one: the log is replayed up to its last whole commit), and
    // the same import run again stores them. After the last batch (an empty one when the import
    // stops on an error) the log file is flushed, and with it every batch before it, before the
    // import says it is done.
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{IMPORT_CACHE_KIB}; PRAGMA wal_autocheckpoint = 0; {}",
        super::schema::UNFLUSHED
    ))
    .map_err(|e| StoreError::backend("import", e))?;
    let outcome = {
        let mut versions = state
            .versions
            .lock()
            .map_err(|_| StoreError::backend("import", "a previous import panicked"))?;
        let outcome = import_transaction(conn, events, &mut versions);
        if events.is_last() {
            *versions = FastMap::default();
        }
        outcome
    };
    conn.execute_batch(&format!(
        "PRAGMA cache_size = {cache}; PRAGMA wal_autocheckpoint = {checkpoint}; {}",
        super::schema::FLUSHED
    ))
    .map_err(|e| StoreError::backend("import", e))?;
    let path = conn.path().map(str::to_owned).filter(|p| !p.is_empty());
    let log_bytes = path
        .as_ref()
        .and_then(|path| std::fs::metadata(format!("{path}-wal")).ok())
        .map_or(0, |m| m.len());
    if events.is_last()
        && let Some(path) = &path
    {
        flush_log(path)?;
    }
    if events.is_last() || log_bytes > IMPORT_LOG_BYTES {
        // Passive: a host serving the same file goes on writing meanwhile; what a reader still
        // needs is copied by a later checkpoint.
        state.wait();
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))
            .unwrap_or(1);
        if busy != 0 {
            tracing::debug!(
                "import: the log was copied in part; the next checkpoint copies the rest"
            );
        }
    } else if let Some(path) = path {
        state.start(path);
    }
    outcome
}

/// Flush the write-ahead log of the database at `path` to the disk: every commit written to it so
/// far survives a power cut.
fn flush_log(path: &str) -> StoreResult<()> {
    match std::fs::File::open(format!("{path}-wal")) {
        Ok(log) => log
            .sync_all()
            .map_err(|e| StoreError::backend("flush the imported events to the disk", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::backend(
            "flush the imported events to the disk",
            e,
        )),
    }
}

/// The most an import lets the write-ahead log grow before it is copied into the database.
const IMPORT_LOG_BYTES: u64 = 512 * 1024 * 1024;

/// The page cache an import uses, in KiB.
const IMPORT_CACHE_KIB: i64 = 64 * 1024;

fn import_transaction(
    conn: &mut Connection,
    events: &ImportBatch,
    known: &mut FastMap<String, StreamVersion>,
) -> StoreResult<Imported> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::backend("begin import", e))?;
    let mut head = head(&tx)?;
    let mut outcome = Imported::default();
    // Each stream's version as the batch goes, recorded in `known` once the batch is committed.
    let mut versions: FastMap<&str, StreamVersion> = FastMap::default();
    {
        let mut version_of = tx
            .prepare_cached("SELECT coalesce(max(version), 0) FROM events WHERE aggregate_id = ?1")
            .map_err(|e| StoreError::backend("prepare import", e))?;
        let mut stored_at = tx
            .prepare_cached(
                "SELECT id, event_type FROM events WHERE aggregate_id = ?1 AND version = ?2",
            )
            .map_err(|e| StoreError::backend("prepare import", e))?;
        // `OR IGNORE`: an event that collides with a stored one is found by the row count, then
        // looked at.
        let mut insert = tx
            .prepare_cached(&format!(
                "INSERT OR IGNORE INTO events ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))
            .map_err(|e| StoreError::backend("prepare import", e))?;
        for imported in events.events() {
            let stream = imported.aggregate_id.as_str();
            // What the store holds at this event's stream and version, if anything: the same
            // event (an import run again) or another (a history that differs).
            let mut present = || -> StoreResult<bool> {
                let stored = stored_at
                    .query_row(params![stream, imported.version as i64], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()
                    .map_err(|e| StoreError::backend("read an imported event", e))?;
                match stored {
                    Some((id, event_type)) => {
                        imported.check_present(&id, &event_type).map(|()| true)
                    }
                    None => Ok(false),
                }
            };
            // The version the stream is at, as far as this import knows: its own writes, or
            // nothing for a stream it has not met (most likely a new stream, whose first version
            // is inserted without reading first).
            let mut current = versions
                .get(stream)
                .or_else(|| known.get(stream))
                .copied()
                .unwrap_or(0);
            if imported.version > current + 1 {
                current = version_of
                    .query_row([stream], |r| r.get::<_, i64>(0))
                    .map_err(|e| StoreError::backend("read the stream version", e))?
                    as StreamVersion;
            }
            if imported.version <= current {
                if !present()? {
                    return Err(imported.gap(current));
                }
                outcome.present += 1;
                versions.insert(stream, current);
                continue;
            }
            if imported.version != current + 1 {
                return Err(imported.gap(current));
            }
            let made;
            let id = match &imported.id {
                Some(id) => id.as_str(),
                None => {
                    made = uuid::Uuid::new_v4().to_string();
                    made.as_str()
                }
            };
            let inserted = insert
                .execute(params![
                    (head + 1) as i64,
                    id,
                    stream,
                    imported.aggregate_type,
                    imported.event_type,
                    imported.version as i64,
                    imported.timestamp_ms,
                    imported.event_data.as_str(),
                    imported.metadata.as_str(),
                ])
                .map_err(|e| StoreError::backend("import", e))?
                == 1;
            if inserted {
                head += 1;
                outcome.stored += 1;
                outcome.last_position = head;
            } else if present()? {
                // Stored already: by a run before this one, or by anyone since this import last
                // read the stream.
                outcome.present += 1;
            } else {
                return Err(imported.duplicate_id());
            }
            versions.insert(stream, imported.version);
        }
    }
    tx.commit()
        .map_err(|e| StoreError::backend("commit import", e))?;
    for (stream, version) in versions {
        match known.get_mut(stream) {
            Some(known) => *known = (*known).max(version),
            None => {
                known.insert(stream.to_owned(), version);
            }
        }
    }
    Ok(outcome)
}
