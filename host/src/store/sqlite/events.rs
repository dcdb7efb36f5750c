//! The event log on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, Row, TransactionBehavior, params, params_from_iter};
use tokio::sync::watch;

use super::SqliteStore;
use crate::domain::{
    AppendResult, EventFilter, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamVersion,
    time,
};
use crate::store::{EventLog, Page, StoreError, StoreResult, StoredId, StreamAppend};

const COLUMNS: &str =
    "position, id, aggregate_id, aggregate_type, event_type, version, timestamp_ms, data, metadata";

pub(super) fn head(conn: &Connection) -> StoreResult<Position> {
    conn.query_row("SELECT coalesce(max(position), 0) FROM events", [], |r| {
        r.get::<_, i64>(0)
    })
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

fn append_all_blocking(
    conn: &mut Connection,
    appends: &[StreamAppend],
) -> StoreResult<Vec<AppendResult>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::backend("begin append", e))?;
    let results = appends
        .iter()
        .map(|a| match already_written(&tx, a)? {
            Some(first) => Ok(first),
            None => append_stream(&tx, &a.aggregate_id, a.expected, &a.events),
        })
        .collect::<StoreResult<Vec<_>>>()?;
    tx.commit()
        .map_err(|e| StoreError::backend("commit append", e))?;
    Ok(results)
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
    let current: StreamVersion =
        tx.query_row(
            "SELECT coalesce(max(version), 0) FROM events WHERE aggregate_id = ?1",
            [aggregate_id],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|e| StoreError::backend("read the stream version", e))? as StreamVersion;
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
        let results = self
            .with_writer(move |conn| append_all_blocking(conn, &appends))
            .await?;
        if let Some(last) = results.iter().map(|r: &AppendResult| r.last_position).max() {
            crate::store::ring(&self.feed, last);
        }
        Ok(results)
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
