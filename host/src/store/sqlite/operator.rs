//! Dead letters, refused components and paused projections on SQLite: the tables operators act
//! on through the API and the CLI.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use crate::domain::{Generation, Position, time};
use crate::store::{
    Components, DeadLetter, DeadLetterKey, DeadLetters, Host, Lease, Leases, MAX_DEAD_LETTER_PAGE,
    OperatorState, Published, Refusal, StoreError, StoreResult,
};

/// Record a dead letter, replacing the one at the same (projection, generation, position).
pub(super) fn insert_dead_letter(conn: &Connection, l: &DeadLetter) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO dead_letters (projection, generation, position, version, event_id, event_type, aggregate_id, error, attempts, at_ms, retry) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![l.projection, l.generation, l.position as i64, l.version, l.event_id, l.event_type, l.aggregate_id, l.error, l.attempts, l.at_ms, l.retry_requested])
    .map(drop)
}

const LETTER_COLUMNS: &str = "projection, generation, position, version, event_id, event_type, aggregate_id, error, attempts, at_ms, retry";

fn row_to_dead_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        projection: r.get(0)?,
        generation: r.get(1)?,
        position: r.get::<_, i64>(2)? as Position,
        version: r.get(3)?,
        event_id: r.get(4)?,
        event_type: r.get(5)?,
        aggregate_id: r.get(6)?,
        error: r.get(7)?,
        attempts: r.get(8)?,
        at_ms: r.get(9)?,
        retry_requested: r.get(10)?,
    })
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn record_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        let letter = letter.clone();
        self.with_writer(move |conn| {
            insert_dead_letter(conn, &letter)
                .map_err(|e| StoreError::backend("record a dead letter", e))
        })
        .await
    }

    async fn dead_letter_page(
        &self,
        projection: Option<&str>,
        after: Option<&DeadLetterKey>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetter>> {
        // Two statements, so that each reads the primary key (projection, generation,
        // position) from where the page starts.
        let projection = projection.map(str::to_owned);
        let after = after.map(|k| (k.projection.clone(), k.generation, k.position as i64));
        let limit = limit.min(MAX_DEAD_LETTER_PAGE) as i64;
        self.with_reader(move |conn| {
            let rows = match &after {
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE ?1 IS NULL OR projection = ?1 ORDER BY projection, generation, position LIMIT ?2"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![projection, limit], row_to_dead_letter)?
                            .collect()
                    }),
                Some((p, g, n)) => conn
                    .prepare_cached(&format!(
                        "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE (projection, generation, position) > (?2, ?3, ?4) AND (?1 IS NULL OR projection = ?1) ORDER BY projection, generation, position LIMIT ?5"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![projection, p, g, n, limit], row_to_dead_letter)?
                            .collect()
                    }),
            };
            rows.map_err(|e| StoreError::backend("read dead letters", e))
        })
        .await
    }

    async fn count_dead_letters(&self) -> StoreResult<BTreeMap<String, u64>> {
        self.with_reader(|conn| {
            conn.prepare_cached("SELECT projection, count(*) FROM dead_letters GROUP BY projection")
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                        .collect()
                })
                .map_err(|e| StoreError::backend("count dead letters", e))
        })
        .await
    }

    async fn dead_letters_to_redrive(
        &self,
        projection: &str,
        generation: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        let projection = projection.to_owned();
        self.with_reader(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {LETTER_COLUMNS} FROM dead_letters WHERE projection = ?1 AND generation = ?2 AND retry = 1 ORDER BY position"
            ))
            .and_then(|mut s| {
                s.query_map(params![projection, generation], row_to_dead_letter)?
                    .collect()
            })
            .map_err(|e| StoreError::backend("find dead letters to re-drive", e))
        })
        .await
    }

    async fn discard_dead_letters(
        &self,
        projection: &str,
        positions: Option<&[Position]>,
    ) -> StoreResult<u64> {
        self.change_dead_letters(
            "DELETE FROM dead_letters",
            "discard dead letters",
            projection,
            positions,
        )
        .await
    }

    async fn request_dead_letter_retry(
        &self,
        projection: &str,
        positions: Option<&[Position]>,
    ) -> StoreResult<u64> {
        self.change_dead_letters(
            "UPDATE dead_letters SET retry = 1",
            "request a retry of dead letters",
            projection,
            positions,
        )
        .await
    }
}

#[async_trait]
impl OperatorState for SqliteStore {
    async fn record_refusal(&self, component: &str, error: Option<&str>) -> StoreResult<()> {
        let (component, error) = (component.to_owned(), error.map(str::to_owned));
        self.with_writer(move |conn| {
            match error {
                Some(error) => conn.execute(
                    "INSERT INTO refusals (component, error, at_ms) VALUES (?1, ?2, ?3) ON CONFLICT (component) DO UPDATE SET error = excluded.error, at_ms = excluded.at_ms",
                    params![component, error, time::now_millis()],
                ),
                None => conn.execute("DELETE FROM refusals WHERE component = ?1", [component]),
            }
            .map(drop)
            .map_err(|e| StoreError::backend("record refusal", e))
        })
        .await
    }

    async fn refusals(&self) -> StoreResult<Vec<Refusal>> {
        self.with_reader(|conn| {
            conn.prepare("SELECT component, error, at_ms FROM refusals ORDER BY component")
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        Ok(Refusal {
                            component: r.get(0)?,
                            error: r.get(1)?,
                            at_ms: r.get(2)?,
                        })
                    })?
                    .collect()
                })
                .map_err(|e| StoreError::backend("read refusals", e))
        })
        .await
    }

    async fn set_paused(&self, projection: &str, paused: bool) -> StoreResult<()> {
        let projection = projection.to_owned();
        self.with_writer(move |conn| {
            if paused {
                conn.execute(
                    "INSERT INTO paused (projection, at_ms) VALUES (?1, ?2) ON CONFLICT (projection) DO NOTHING",
                    params![projection, time::now_millis()],
                )
            } else {
                conn.execute("DELETE FROM paused WHERE projection = ?1", [projection])
            }
            .map(drop)
            .map_err(|e| StoreError::backend("pause or resume", e))
        })
        .await
    }

    async fn paused(&self) -> StoreResult<BTreeSet<String>> {
        self.with_reader(|conn| {
            conn.prepare("SELECT projection FROM paused")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(|e| StoreError::backend("read paused projections", e))
        })
        .await
    }
}

impl SqliteStore {
    /// Run `statement` (a DELETE or UPDATE of `dead_letters`) on a projection's dead letters at
    /// `positions` (all for `None`), in one transaction; returns the rows changed.
    async fn change_dead_letters(
        &self,
        statement: &'static str,
        what: &'static str,
        projection: &str,
        positions: Option<&[Position]>,
    ) -> StoreResult<u64> {
        let projection = projection.to_owned();
        let positions = positions.map(<[Position]>::to_vec);
        self.with_writer(move |conn| {
            let failed = |e| StoreError::backend(what, e);
            let tx = conn.transaction().map_err(failed)?;
            let changed = match positions {
                None => tx
                    .execute(&format!("{statement} WHERE projection = ?1"), [&projection])
                    .map_err(failed)?,
                Some(positions) => {
                    let mut changed = 0;
                    for position in positions {
                        changed += tx
                            .execute(
                                &format!("{statement} WHERE projection = ?1 AND position = ?2"),
                                params![projection, position as i64],
                            )
                            .map_err(failed)?;
                    }
                    changed
                }
            };
            tx.commit().map_err(failed)?;
            Ok(changed as u64)
        })
        .await
    }
}

/// The embedded store is held by one host (its file lock): every lease is this host's.
#[async_trait]
impl Leases for SqliteStore {
    fn lease_time(&self) -> Option<std::time::Duration> {
        None
    }

    async fn take_lease(&self, _: &Generation) -> StoreResult<bool> {
        Ok(true)
    }

    async fn renew_leases(&self, _: &[(String, u32)]) -> StoreResult<Vec<(String, u32)>> {
        Ok(vec![])
    }

    async fn release_lease(&self, _: &str, _: u32) -> StoreResult<()> {
        Ok(())
    }

    fn held_leases(&self) -> Vec<(String, u32)> {
        vec![]
    }

    async fn leave(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn live_hosts(&self) -> StoreResult<Vec<Host>> {
        Ok(vec![])
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        Ok(vec![])
    }
}

/// The embedded store is served by one host, whose projections folder is the deployment: it
/// keeps no components.
#[async_trait]
impl Components for SqliteStore {
    fn publishes(&self) -> bool {
        false
    }

    async fn publish(
        &self,
        name: &str,
        _: &[u8],
        _: &str,
        _: &str,
    ) -> StoreResult<(Published, bool)> {
        Err(one_host(name))
    }

    async fn unpublish(&self, name: &str, _: Option<&str>, _: Option<&str>) -> StoreResult<bool> {
        Err(one_host(name))
    }

    async fn published(&self) -> StoreResult<Vec<Published>> {
        Ok(vec![])
    }

    async fn published_by(&self, _: &str) -> StoreResult<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    async fn component(&self, _: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(None)
    }

    async fn deployment_revision(&self) -> StoreResult<u64> {
        Ok(0)
    }
}

fn one_host(name: &str) -> StoreError {
    StoreError::InvalidInput(format!(
        "cannot publish or withdraw `{name}` on the embedded store: one host serves it, and its \
         projections folder is the deployment (copy the component there, or remove it)"
    ))
}
