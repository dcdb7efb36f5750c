//! Connection settings and the schema of the embedded store.

use rusqlite::Connection;

use crate::store::{StoreError, StoreResult};

/// The event log, the generation registry. Read collections are tables created per generation.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    aggregate_id   TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    timestamp_ms   INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    UNIQUE (aggregate_id, version)
);
CREATE TABLE IF NOT EXISTS generations (
    projection TEXT    NOT NULL,
    number     INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    code_hash  TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    checkpoint INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    collections TEXT NOT NULL DEFAULT '[]',
    upcasters  TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (projection, number)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    projection   TEXT    NOT NULL,
    generation   INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    event_id     TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    aggregate_id TEXT    NOT NULL,
    error        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    at_ms        INTEGER NOT NULL,
    retry        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (projection, generation, position)
);
CREATE TABLE IF NOT EXISTS document_writes (
    projection TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    after      INTEGER NOT NULL,
    upto       INTEGER NOT NULL,
    redriven   TEXT    NOT NULL,
    documents  TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS document_writes_by_generation
    ON document_writes (projection, generation, upto);
CREATE TABLE IF NOT EXISTS paused (
    projection TEXT    PRIMARY KEY NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deferred_indexes (
    projection TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    statement  TEXT    NOT NULL,
    PRIMARY KEY (projection, generation, statement)
);
CREATE TABLE IF NOT EXISTS refusals (
    component TEXT    PRIMARY KEY NOT NULL,
    error     TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL
);
";

/// WAL for concurrent readers; commits flushed to the disk ([`FLUSHED`]) so an acknowledged
/// append survives a power loss, not only a process crash.
pub(super) fn configure_writer(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; {FLUSHED}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;"
    ))
    .map_err(|e| StoreError::backend("configure the store", e))
}

/// The writer's commits are flushed to the disk before they return: appends, and every write
/// but a projection's batches and an import's batches (which flushes at its end).
pub(super) const FLUSHED: &str = "PRAGMA synchronous = FULL";

/// The writer's commits return before they are flushed: a projection's batches. They reach the
/// disk with the next flushed write (an append, any other write) or the next copy of the log
/// into the database file. A power loss (not a crash of the process) before that may take the
/// last of them, never part of one, and the log of events they were folded from stays; the
/// projection finds its checkpoint where its documents are and folds those events again.
pub(super) const UNFLUSHED: &str = "PRAGMA synchronous = NORMAL";

pub(super) fn configure_reader(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch("PRAGMA busy_timeout = 10000;")
        .map_err(|e| StoreError::backend("configure a reader", e))
}

pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(SCHEMA)
        .map_err(|e| StoreError::backend("create the schema", e))?;
    // Stores created before 2026-11-28 have two indexes of the log that no read uses (a read
    // by event or aggregate type goes in position order, see `read_all_blocking`) and that
    // every append paid for: a third of an import's time.
    conn.execute_batch(
        "DROP INDEX IF EXISTS events_by_event_type; DROP INDEX IF EXISTS events_by_aggregate_type;",
    )
    .map_err(|e| StoreError::backend("upgrade the schema", e))?;
    // Stores created before generations recorded their collections, or their upcasters.
    for column in ["collections", "upcasters"] {
        let has_column: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('generations') WHERE name = ?1",
                [column],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| StoreError::backend("inspect the schema", e))?;
        if !has_column {
            conn.execute_batch(&format!(
                "ALTER TABLE generations ADD COLUMN {column} TEXT NOT NULL DEFAULT '[]'"
            ))
            .map_err(|e| StoreError::backend("upgrade the schema", e))?;
        }
    }
    Ok(())
}
