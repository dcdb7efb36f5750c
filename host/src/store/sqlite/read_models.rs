//! Read collections, generations and checkpoints on SQLite.
//!
//! Each collection of a generation is a table `<projection>__g<n>__<collection>` of
//! `(id, body)` where `body` is the document's JSON text; declared indexes are expression
//! indexes on `json_extract(body, path)`. The stable name `<projection>__<collection>` is a
//! view over the active generation's table, replaced inside the cut-over transaction.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{SqliteStore, quoted};
use crate::domain::generation::{physical_name, stable_name};
use crate::domain::{Generation, GenerationState, Manifest, Position, extjson, query, time};
use crate::store::{
    BatchWrites, DeadLetter, DocumentReader, Query, ReadModelStore, Refusal, StoreError,
    StoreResult,
};

const GENERATION_COLUMNS: &str =
    "projection, number, version, code_hash, state, checkpoint, last_error, collections";

fn row_to_generation(row: &rusqlite::Row<'_>) -> rusqlite::Result<Generation> {
    let state: String = row.get(4)?;
    let collections: String = row.get(7)?;
    Ok(Generation {
        projection: row.get(0)?,
        number: row.get(1)?,
        version: row.get(2)?,
        code_hash: row.get(3)?,
        state: GenerationState::parse(&state).unwrap_or(GenerationState::Retired),
        checkpoint: row.get::<_, i64>(5)? as Position,
        last_error: row.get(6)?,
        collections: serde_json::from_str(&collections).unwrap_or_default(),
    })
}

fn query_generations(conn: &Connection, projection: Option<&str>) -> StoreResult<Vec<Generation>> {
    let sql = format!(
        "SELECT {GENERATION_COLUMNS} FROM generations WHERE ?1 IS NULL OR projection = ?1 ORDER BY projection, number"
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(|e| StoreError::backend("prepare generations", e))?;
    stmt.query_map([projection], row_to_generation)
        .and_then(|rows| rows.collect())
        .map_err(|e| StoreError::backend("read generations", e))
}

/// `json_extract` path for a field path that passed [`crate::domain::manifest::is_field_path`].
fn json_path(field: &str) -> String {
    let segments: Vec<String> = field.split('.').map(|s| format!("\"{s}\"")).collect();
    format!("'$.{}'", segments.join("."))
}

fn create_collections(
    conn: &Connection,
    generation: &Generation,
    manifest: &Manifest,
) -> StoreResult<()> {
    for collection in &manifest.collections {
        let table = generation.physical_name(&collection.name);
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL) WITHOUT ROWID;",
            quoted(&table)
        );
        for index in &collection.indexes {
            let keys: Vec<String> = index
                .keys
                .iter()
                .map(|k| {
                    format!(
                        "json_extract(body, {}){}",
                        json_path(&k.field),
                        if k.descending { " DESC" } else { "" }
                    )
                })
                .collect();
            sql.push_str(&format!(
                "CREATE {}INDEX IF NOT EXISTS {} ON {} ({});",
                if index.unique { "UNIQUE " } else { "" },
                quoted(&format!("{table}__{}", index.name)),
                quoted(&table),
                keys.join(", ")
            ));
        }
        conn.execute_batch(&sql)
            .map_err(|e| StoreError::backend(format!("create collection {table}"), e))?;
    }
    let names: Vec<String> = manifest
        .collections
        .iter()
        .map(|c| c.name.clone())
        .collect();
    conn.execute(
        "UPDATE generations SET collections = ?3 WHERE projection = ?1 AND number = ?2",
        params![
            generation.projection,
            generation.number,
            serde_json::to_string(&names).unwrap_or_default()
        ],
    )
    .map_err(|e| StoreError::backend("record collections", e))?;
    if generation.state == GenerationState::Active {
        point_views(conn, &generation.projection, generation.number, &names, &[])?;
    }
    Ok(())
}

/// Point the stable names of `collections` at generation `number`'s tables, and drop those of
/// `stale` collections the generation does not have.
fn point_views(
    conn: &Connection,
    projection: &str,
    number: u32,
    collections: &[String],
    stale: &[String],
) -> StoreResult<()> {
    let mut sql = String::new();
    for collection in collections {
        let view = quoted(&stable_name(projection, collection));
        let table = quoted(&physical_name(projection, number, collection));
        sql.push_str(&format!(
            "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS SELECT id, body FROM {table};"
        ));
    }
    for collection in stale.iter().filter(|c| !collections.contains(c)) {
        let view = quoted(&stable_name(projection, collection));
        sql.push_str(&format!("DROP VIEW IF EXISTS {view};"));
    }
    conn.execute_batch(&sql)
        .map_err(|e| StoreError::backend("repoint stable names", e))
}

fn commit_blocking(
    conn: &mut Connection,
    generation: &Generation,
    writes: &BatchWrites,
    from: Position,
    to: Position,
) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::backend("begin batch", e))?;
    let stored: Option<i64> = tx
        .query_row(
            "SELECT checkpoint FROM generations WHERE projection = ?1 AND number = ?2",
            params![generation.projection, generation.number],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| StoreError::backend("read checkpoint", e))?;
    let stored = stored.ok_or_else(|| {
        StoreError::NotFound(format!(
            "{} generation {}",
            generation.projection, generation.number
        ))
    })? as Position;
    if stored != from {
        return Err(StoreError::CheckpointMoved {
            projection: generation.projection.clone(),
            generation: generation.number,
            expected: from,
            found: stored,
        });
    }
    for (collection, id, document) in &writes.documents {
        let table = quoted(&generation.physical_name(collection));
        let result = match document {
            Some(doc) => tx
                .prepare_cached(&format!(
                    "INSERT INTO {table} (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = excluded.body"
                ))
                .and_then(|mut s| {
                    s.execute(params![id, serde_json::to_string(&**doc).unwrap_or_default()])
                }),
            None => tx
                .prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))
                .and_then(|mut s| s.execute([id])),
        };
        result.map_err(|e| StoreError::backend(format!("write {table}/{id}"), e))?;
    }
    for position in &writes.resolved_dead_letters {
        tx.prepare_cached(
            "DELETE FROM dead_letters WHERE projection = ?1 AND generation = ?2 AND position = ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                generation.projection,
                generation.number,
                *position as i64
            ])
        })
        .map_err(|e| StoreError::backend("resolve a dead letter", e))?;
    }
    tx.execute(
        "UPDATE generations SET checkpoint = ?3 WHERE projection = ?1 AND number = ?2",
        params![generation.projection, generation.number, to as i64],
    )
    .map_err(|e| StoreError::backend("move checkpoint", e))?;
    tx.commit()
        .map_err(|e| StoreError::backend("commit batch", e))
}

fn activate_blocking(
    conn: &mut Connection,
    generation: &Generation,
    previous: GenerationState,
) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::backend("begin cut-over", e))?;
    let stale: Vec<String> = query_generations(&tx, Some(&generation.projection))?
        .into_iter()
        .filter(|g| g.state == GenerationState::Active)
        .flat_map(|g| g.collections)
        .collect();
    point_views(
        &tx,
        &generation.projection,
        generation.number,
        &generation.collections,
        &stale,
    )?;
    tx.execute(
        "UPDATE generations SET state = ?3 WHERE projection = ?1 AND state = 'active' AND number <> ?2",
        params![generation.projection, generation.number, previous.as_str()],
    )
    .and_then(|_| {
        tx.execute(
            "UPDATE generations SET state = 'active' WHERE projection = ?1 AND number = ?2",
            params![generation.projection, generation.number],
        )
    })
    .map_err(|e| StoreError::backend("record cut-over", e))?;
    tx.commit()
        .map_err(|e| StoreError::backend("commit cut-over", e))
}

/// A document reader over one generation's tables, with its own connection.
struct SqliteReader {
    conn: Connection,
    tables: HashMap<String, String>,
}

impl DocumentReader for SqliteReader {
    fn get(&mut self, collection: &str, id: &str) -> StoreResult<Option<Map<String, Value>>> {
        let table = self
            .tables
            .get(collection)
            .ok_or_else(|| StoreError::NotFound(format!("collection {collection}")))?;
        let body: Option<String> = self
            .conn
            .prepare_cached(&format!("SELECT body FROM {table} WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| StoreError::backend(format!("read {table}/{id}"), e))?;
        body.map(|text| match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(StoreError::backend(
                format!("read {table}/{id}"),
                "stored document is not a JSON object",
            )),
        })
        .transpose()
    }
}

fn parse_body(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Whether a stable name (view) exists yet: before a projection's first cut-over it does not.
fn view_exists(conn: &Connection, view: &str) -> StoreResult<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?1",
        [view],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(|e| StoreError::backend("look up view", e))
}

#[async_trait]
impl ReadModelStore for SqliteStore {
    async fn generations(&self, projection: &str) -> StoreResult<Vec<Generation>> {
        let projection = projection.to_owned();
        self.with_reader(move |conn| query_generations(conn, Some(&projection)))
            .await
    }

    async fn all_generations(&self) -> StoreResult<Vec<Generation>> {
        self.with_reader(|conn| query_generations(conn, None)).await
    }

    async fn create_generation(
        &self,
        manifest: &Manifest,
        code_hash: &str,
    ) -> StoreResult<Generation> {
        let manifest = manifest.clone();
        let code_hash = code_hash.to_owned();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StoreError::backend("begin create generation", e))?;
            let number: u32 = tx
                .query_row(
                    "SELECT coalesce(max(number), 0) + 1 FROM generations WHERE projection = ?1",
                    [&manifest.name],
                    |r| r.get(0),
                )
                .map_err(|e| StoreError::backend("number generation", e))?;
            let generation = Generation {
                projection: manifest.name.clone(),
                number,
                version: manifest.version,
                code_hash,
                state: GenerationState::Building,
                checkpoint: 0,
                last_error: None,
                collections: manifest.collections.iter().map(|c| c.name.clone()).collect(),
            };
            tx.execute(
                "INSERT INTO generations (projection, number, version, code_hash, state, checkpoint, created_ms) VALUES (?1, ?2, ?3, ?4, 'building', 0, ?5)",
                params![generation.projection, number, generation.version, generation.code_hash, time::now_millis()],
            )
            .map_err(|e| StoreError::backend("register generation", e))?;
            create_collections(&tx, &generation, &manifest)?;
            tx.commit().map_err(|e| StoreError::backend("commit create generation", e))?;
            Ok(generation)
        })
        .await
    }

    async fn prepare_collections(
        &self,
        generation: &Generation,
        manifest: &Manifest,
    ) -> StoreResult<()> {
        let (generation, manifest) = (generation.clone(), manifest.clone());
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StoreError::backend("begin prepare collections", e))?;
            create_collections(&tx, &generation, &manifest)?;
            tx.commit()
                .map_err(|e| StoreError::backend("commit prepare collections", e))
        })
        .await
    }

    async fn set_code(&self, generation: &Generation, code_hash: &str) -> StoreResult<()> {
        let (projection, number, code_hash) = (
            generation.projection.clone(),
            generation.number,
            code_hash.to_owned(),
        );
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE generations SET code_hash = ?3 WHERE projection = ?1 AND number = ?2",
                params![projection, number, code_hash],
            )
            .map(drop)
            .map_err(|e| StoreError::backend("record code", e))
        })
        .await
    }

    async fn commit(
        &self,
        generation: &Generation,
        writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> StoreResult<()> {
        let generation = generation.clone();
        self.with_writer(move |conn| commit_blocking(conn, &generation, &writes, from, to))
            .await
    }

    async fn activate(
        &self,
        generation: &Generation,
        previous: GenerationState,
    ) -> StoreResult<()> {
        let generation = generation.clone();
        self.with_writer(move |conn| activate_blocking(conn, &generation, previous))
            .await
    }

    async fn set_state(&self, generation: &Generation, state: GenerationState) -> StoreResult<()> {
        let (projection, number) = (generation.projection.clone(), generation.number);
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE generations SET state = ?3 WHERE projection = ?1 AND number = ?2",
                params![projection, number, state.as_str()],
            )
            .map(drop)
            .map_err(|e| StoreError::backend("record state", e))
        })
        .await
    }

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

    async fn set_error(&self, generation: &Generation, error: Option<&str>) -> StoreResult<()> {
        let (projection, number) = (generation.projection.clone(), generation.number);
        let error = error.map(str::to_owned);
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE generations SET last_error = ?3 WHERE projection = ?1 AND number = ?2",
                params![projection, number, error],
            )
            .map(drop)
            .map_err(|e| StoreError::backend("record error", e))
        })
        .await
    }

    fn reader(&self, generation: &Generation) -> StoreResult<Box<dyn DocumentReader>> {
        let conn = Self::open_reader(self.path())?;
        // Tables are looked up by logical name; the generation's manifest is not needed here
        // because the physical name is derived, and a missing table fails the read clearly.
        let prefix = physical_name(&generation.projection, generation.number, "");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1")
            .and_then(|mut s| s.query_map([&prefix], |r| r.get(0))?.collect())
            .map_err(|e| StoreError::backend("list collections", e))?;
        let tables = tables
            .into_iter()
            .filter_map(|t| {
                t.strip_prefix(&prefix)
                    .map(|logical| (logical.to_owned(), quoted(&t)))
            })
            .collect();
        Ok(Box::new(SqliteReader { conn, tables }))
    }

    async fn get_document(
        &self,
        projection: &str,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Value>> {
        let view = stable_name(projection, collection);
        let id = id.to_owned();
        self.with_reader(move |conn| {
            if !view_exists(conn, &view)? {
                return Err(StoreError::NotFound(format!("collection {view}")));
            }
            conn.query_row(
                &format!("SELECT body FROM {} WHERE id = ?1", quoted(&view)),
                [&id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|b| b.map(parse_body))
            .map_err(|e| StoreError::backend(format!("read {view}/{id}"), e))
        })
        .await
    }

    async fn find_documents(
        &self,
        projection: &str,
        collection: &str,
        query: &Query,
    ) -> StoreResult<Vec<Value>> {
        let view = stable_name(projection, collection);
        let query = query.clone();
        self.with_reader(move |conn| {
            if !view_exists(conn, &view)? {
                return Err(StoreError::NotFound(format!("collection {view}")));
            }
            let failed = |e| StoreError::backend(format!("query {view}"), e);
            let mut stmt = conn
                .prepare(&format!("SELECT id, body FROM {}", quoted(&view)))
                .map_err(failed)?;
            let mut rows = stmt.query([]).map_err(failed)?;
            let mut documents = Vec::new();
            while let Some(row) = rows.next().map_err(failed)? {
                let id: String = row.get(0).map_err(failed)?;
                let body = parse_body(row.get(1).map_err(failed)?);
                let Value::Object(map) = &body else {
                    continue;
                };
                match extjson::to_document(map) {
                    Ok(document) => documents.push((document, body)),
                    Err(error) => {
                        tracing::warn!(collection = %view, %id, %error, "document left out of a query: it is not valid Extended JSON");
                    }
                }
            }
            Ok(query::run(&query, documents))
        })
        .await
    }

    async fn record_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        let l = letter.clone();
        self.with_writer(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (projection, generation, position, version, event_id, event_type, aggregate_id, error, attempts, at_ms, retry) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![l.projection, l.generation, l.position as i64, l.version, l.event_id, l.event_type, l.aggregate_id, l.error, l.attempts, l.at_ms, l.retry_requested],
            )
            .map(drop)
            .map_err(|e| StoreError::backend("record a dead letter", e))
        })
        .await
    }

    async fn dead_letters(&self, projection: Option<&str>) -> StoreResult<Vec<DeadLetter>> {
        let projection = projection.map(str::to_owned);
        self.with_reader(move |conn| {
            conn.prepare(
                "SELECT projection, generation, position, version, event_id, event_type, aggregate_id, error, attempts, at_ms, retry FROM dead_letters WHERE ?1 IS NULL OR projection = ?1 ORDER BY projection, generation, position",
            )
            .and_then(|mut s| {
                s.query_map([projection], |r| {
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
                })?
                .collect()
            })
            .map_err(|e| StoreError::backend("read dead letters", e))
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

    async fn list_documents(
        &self,
        projection: &str,
        collection: &str,
        limit: usize,
    ) -> StoreResult<Vec<Value>> {
        let view = stable_name(projection, collection);
        self.with_reader(move |conn| {
            if !view_exists(conn, &view)? {
                return Err(StoreError::NotFound(format!("collection {view}")));
            }
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT body FROM {} ORDER BY id LIMIT ?1",
                    quoted(&view)
                ))
                .map_err(|e| StoreError::backend(format!("list {view}"), e))?;
            stmt.query_map([limit as i64], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.map(|r| r.map(parse_body)).collect())
                .map_err(|e| StoreError::backend(format!("list {view}"), e))
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
