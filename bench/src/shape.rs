//! The payment shape (#18): a log where every event is a payment event, so every event is
//! handled. Each one updates its payment's document (more than half of them new) and its
//! organization's counters (50 organizations). Beside Refold's replay of it, in the same run and
//! on the same events, the naive native loop anyone could write: rusqlite, a read-modify-write
//! of each JSON document, one transaction per N events.
//!
//! The naive loop applies the same update operators as the native handler
//! ([`super::native`]), so its read model must equal the guest's, document for document; the
//! benchmark checks it before it reports.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use refold::cli::demo_data::Rng;
use refold::domain::{ExpectedVersion, NewEvent, RecordedEvent};
use refold::store::{Store, StreamAppend};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// 2025-01-01T00:00:00Z.
const START_MS: i64 = 1_735_689_600_000;
const ORGANIZATIONS: u64 = 50;
const USERS: u64 = 2_000;
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const DECLINES: [&str; 3] = ["card_declined", "insufficient_funds", "gateway_timeout"];
/// Payments still open to a retry: the most recent ones.
const OPEN_WINDOW: usize = 5_000;

/// An open payment: its stream, version, user, organization, amount and currency.
struct Open {
    id: String,
    version: u64,
    user: u64,
    organization: u64,
    amount: f64,
    currency: &'static str,
}

/// `events` payment events: 60 % start a payment (processed, or failed one time in four), the
/// rest are a retry or a further failure of one of the recent payments.
pub fn history(events: usize, seed: u64) -> Vec<StreamAppend> {
    let mut rng = Rng(seed);
    let mut open: Vec<Open> = Vec::new();
    let mut appends = Vec::with_capacity(events);
    let mut now = START_MS;
    let mut started = 0u64;
    for _ in 0..events {
        now += 1 + rng.below(2_000) as i64;
        let existing = !open.is_empty() && rng.below(100) < 40;
        let payment = if existing {
            let index = rng.below(open.len() as u64) as usize;
            open.swap_remove(index)
        } else {
            started += 1;
            let user = rng.below(USERS);
            Open {
                id: format!("payment-{started:08}"),
                version: 0,
                user,
                organization: user % ORGANIZATIONS,
                amount: (100 + rng.below(99_900)) as f64 / 100.0,
                currency: CURRENCIES[rng.below(3) as usize],
            }
        };
        let failed = rng.below(100) < 25;
        let data = if !failed {
            json!({ "amount": payment.amount, "currency": payment.currency, "status": "completed", "method": if rng.below(5) == 0 { "transfer" } else { "card" } })
        } else {
            let error = DECLINES[rng.below(3) as usize];
            // Seed 000's PHP store writes a failure as its error alone.
            if error == "gateway_timeout" {
                json!({ "error": error })
            } else {
                json!({ "amount": payment.amount, "currency": payment.currency, "error": error })
            }
        };
        let expected = match payment.version {
            0 => ExpectedVersion::NoStream,
            version => ExpectedVersion::Exact(version),
        };
        appends.push(StreamAppend {
            aggregate_id: payment.id.clone(),
            expected,
            events: vec![NewEvent {
                id: None,
                aggregate_type: "Payment".into(),
                event_type: if failed {
                    "PaymentFailed"
                } else {
                    "PaymentProcessed"
                }
                .into(),
                event_data: data,
                metadata: json!({
                    "userId": format!("user-{:06}", payment.user),
                    "organizationId": format!("org-{:03}", payment.organization),
                }),
                timestamp_ms: Some(now),
            }],
        });
        open.push(Open {
            version: payment.version + 1,
            ..payment
        });
        if open.len() > OPEN_WINDOW {
            open.swap_remove(rng.below(open.len() as u64) as usize);
        }
    }
    appends
}

/// Append the shape's history to `store`; how many payments it started.
pub async fn fill(store: &dyn Store, events: usize, seed: u64) -> anyhow::Result<usize> {
    let history = history(events, seed);
    let started = history
        .iter()
        .filter(|a| a.expected == ExpectedVersion::NoStream)
        .count();
    let mut batch = Vec::new();
    for append in history {
        batch.push(append);
        if batch.len() >= 2_000 {
            store.append_all(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.append_all(batch).await?;
    }
    Ok(started)
}

/// One run of the naive loop.
#[derive(Debug, Clone, Serialize)]
pub struct Naive {
    /// What ran.
    pub name: String,
    /// Events per transaction.
    pub events_per_transaction: usize,
    /// Events handled.
    pub handled: u64,
    /// Seconds, opening the databases included.
    pub seconds: f64,
    /// Events per second.
    pub handled_per_s: f64,
}

/// The naive loop: read the log's events from the store's SQLite file in position order; for
/// each, read its payment's and its organization's JSON documents from `out` (a file of its
/// own, WAL, `synchronous = NORMAL` as Refold's store commits a projection's batches), apply the
/// updates, write them back; commit every `per_transaction` events with a checkpoint row.
pub fn naive_loop(events_db: &Path, out: &Path, per_transaction: usize) -> anyhow::Result<Naive> {
    let started = Instant::now();
    let log = Connection::open_with_flags(events_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut db = Connection::open(out)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE payments (id TEXT PRIMARY KEY, body TEXT NOT NULL);
         CREATE TABLE org_stats (id TEXT PRIMARY KEY, body TEXT NOT NULL);
         CREATE TABLE checkpoint (id INTEGER PRIMARY KEY, position INTEGER NOT NULL);",
    )?;
    let mut read = log.prepare(
        "SELECT position, id, aggregate_id, aggregate_type, event_type, version, timestamp_ms, data, metadata
         FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
    )?;
    let (mut after, mut handled) = (0i64, 0u64);
    loop {
        let page: Vec<RecordedEvent> = read
            .query_map(params![after, per_transaction as i64], |r| {
                Ok(RecordedEvent {
                    position: r.get::<_, i64>(0)? as u64,
                    id: r.get(1)?,
                    aggregate_id: r.get(2)?,
                    aggregate_type: r.get(3)?,
                    event_type: r.get(4)?,
                    version: r.get::<_, i64>(5)? as u64,
                    timestamp_ms: r.get(6)?,
                    data: r.get(7)?,
                    metadata: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.position as i64;
        let tx = db.transaction()?;
        for event in &page {
            let Some((payment, organization, stats)) = super::native::payment_updates(event) else {
                continue;
            };
            for (table, id, update) in [
                ("payments", event.aggregate_id.as_str(), &payment),
                ("org_stats", organization.as_str(), &stats),
            ] {
                let body: Option<String> = tx
                    .prepare_cached(&format!("SELECT body FROM {table} WHERE id = ?1"))?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                let mut document: Map<String, Value> = match body {
                    Some(body) => serde_json::from_str(&body)?,
                    None => Map::from_iter([("_id".to_owned(), json!(id))]),
                };
                super::native::apply(&mut document, update);
                tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {table} (id, body) VALUES (?1, ?2)"
                ))?
                .execute(params![id, serde_json::to_string(&document)?])?;
            }
            handled += 1;
        }
        tx.execute(
            "INSERT OR REPLACE INTO checkpoint (id, position) VALUES (1, ?1)",
            [after],
        )?;
        tx.commit()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Naive {
        name: format!("naive rusqlite loop, {per_transaction} events per transaction"),
        events_per_transaction: per_transaction,
        handled,
        seconds,
        handled_per_s: handled as f64 / seconds,
    })
}

/// A table's documents by id, from any SQLite file.
pub fn documents(db: &Path, table: &str) -> anyhow::Result<HashMap<String, Value>> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(&format!("SELECT id, body FROM \"{table}\""))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (id, body) = row?;
        out.insert(id, serde_json::from_str(&body)?);
    }
    Ok(out)
}
