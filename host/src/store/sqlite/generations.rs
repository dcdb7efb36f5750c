//! The generation registry on SQLite.
//!
//! Each collection of a generation is a table `<projection>__g<n>__<collection>` of
//! `(id, body)` where `body` is the document's JSON text; declared indexes are expression
//! indexes on `json_extract(body, path)`. The stable name `<projection>__<collection>` is a
//! view over the active generation's table, replaced inside the cut-over transaction. Numbering
//! and the cut-over's plan come from [`crate::store::generations`].

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior, params};

use super::fields::{json_path, unique_kind};
use super::{SqliteStore, quoted};
use crate::domain::generation::{physical_name, stable_name};
use crate::domain::{Generation, GenerationState, Manifest, Position, time};
use crate::store::generations::{self, CutOver};
use crate::store::{Generations, StoreError, StoreResult};

const GENERATION_COLUMNS: &str =
    "projection, number, version, code_hash, state, checkpoint, last_error, collections, upcasters";

fn row_to_generation(row: &rusqlite::Row<'_>) -> rusqlite::Result<Generation> {
    let state: String = row.get(4)?;
    let collections: String = row.get(7)?;
    let upcasters: String = row.get(8)?;
    Ok(Generation {
        projection: row.get(0)?,
        number: row.get(1)?,
        version: row.get(2)?,
        code_hash: row.get(3)?,
        upcasters: serde_json::from_str(&upcasters).unwrap_or_default(),
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
                    let path = json_path(&k.field);
                    let value = format!(
                        "json_extract(body, {path}){}",
                        if k.descending { " DESC" } else { "" }
                    );
                    if index.unique {
                        // Beside the value, its kind, so that `true` and `1` or `"[1]"` and
                        // `[1]` differ as they do in MongoDB; a missing or null key is NULL,
                        // which SQLite never counts as a duplicate (MongoDB's store makes its
                        // unique indexes partial to match).
                        format!("{}, {value}", unique_kind(&path))
                    } else {
                        value
                    }
                })
                .collect();
            let statement = format!(
                "CREATE {}INDEX IF NOT EXISTS {} ON {} ({});",
                if index.unique { "UNIQUE " } else { "" },
                quoted(&format!("{table}__{}", index.name)),
                quoted(&table),
                keys.join(", ")
            );
            if index.unique || generation.state != GenerationState::Building {
                sql.push_str(&statement);
            } else {
                // Built in one pass at the cut-over instead of kept up to date through the
                // replay: nothing reads a building generation's collections by them.
                conn.execute(
                    "INSERT OR IGNORE INTO deferred_indexes (projection, generation, statement) VALUES (?1, ?2, ?3)",
                    params![generation.projection, generation.number, statement],
                )
                .map_err(|e| StoreError::backend(format!("defer index of {table}"), e))?;
            }
        }
        conn.execute_batch(&sql)
            .map_err(|e| StoreError::backend(format!("create collection {table}"), e))?;
    }
    if generation.state != GenerationState::Building {
        build_deferred_indexes(conn, generation)?;
    }
    let names: Vec<String> = manifest.collection_names();
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
        let plan = CutOver {
            point: names,
            remove: Vec::new(),
            demote: Vec::new(),
        };
        point_views(conn, generation, &plan)?;
    }
    Ok(())
}

/// Point the stable names the plan names at the generation's tables, and drop those it removes.
fn point_views(conn: &Connection, generation: &Generation, plan: &CutOver) -> StoreResult<()> {
    let projection = &generation.projection;
    let mut sql = String::new();
    for collection in &plan.point {
        let view = quoted(&stable_name(projection, collection));
        let table = quoted(&physical_name(projection, generation.number, collection));
        sql.push_str(&format!(
            "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS SELECT id, body FROM {table};"
        ));
    }
    for collection in &plan.remove {
        let view = quoted(&stable_name(projection, collection));
        sql.push_str(&format!("DROP VIEW IF EXISTS {view};"));
    }
    conn.execute_batch(&sql)
        .map_err(|e| StoreError::backend("repoint stable names", e))
}

/// Build the indexes a building generation's collections were created without.
fn build_deferred_indexes(conn: &Connection, generation: &Generation) -> StoreResult<()> {
    const BUILD: &str = "build the generation's indexes";
    let statements: Vec<String> = conn
        .prepare_cached(
            "SELECT statement FROM deferred_indexes WHERE projection = ?1 AND generation = ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![generation.projection, generation.number], |r| {
                r.get(0)
            })?
            .collect()
        })
        .map_err(|e| StoreError::backend(BUILD, e))?;
    for statement in statements {
        conn.execute_batch(&statement)
            .map_err(|e| StoreError::backend(BUILD, e))?;
    }
    conn.execute(
        "DELETE FROM deferred_indexes WHERE projection = ?1 AND generation = ?2",
        params![generation.projection, generation.number],
    )
    .map(drop)
    .map_err(|e| StoreError::backend(BUILD, e))
}

fn activate_blocking(
    conn: &mut Connection,
    generation: &Generation,
    previous: GenerationState,
) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::backend("begin cut-over", e))?;
    let registered = query_generations(&tx, Some(&generation.projection))?;
    let plan = generations::cut_over(&registered, generation)?;
    build_deferred_indexes(&tx, generation)?;
    point_views(&tx, generation, &plan)?;
    for number in &plan.demote {
        tx.execute(
            "UPDATE generations SET state = ?3 WHERE projection = ?1 AND number = ?2",
            params![generation.projection, number, previous.as_str()],
        )
        .map_err(|e| StoreError::backend("record cut-over", e))?;
    }
    tx.execute(
        "UPDATE generations SET state = 'active' WHERE projection = ?1 AND number = ?2",
        params![generation.projection, generation.number],
    )
    .map_err(|e| StoreError::backend("record cut-over", e))?;
    tx.commit()
        .map_err(|e| StoreError::backend("commit cut-over", e))
}

#[async_trait]
impl Generations for SqliteStore {
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
        upcasters: &[String],
        seen: Option<u32>,
    ) -> StoreResult<Generation> {
        let manifest = manifest.clone();
        let code_hash = code_hash.to_owned();
        let upcasters = upcasters.to_vec();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StoreError::backend("begin create generation", e))?;
            let registered = query_generations(&tx, Some(&manifest.name))?;
            if let Some(g) =
                generations::registered_since(&registered, seen, &manifest, &code_hash, &upcasters)
            {
                return Ok(g.clone());
            }
            let latest: Option<u32> = tx
                .query_row(
                    "SELECT max(number) FROM generations WHERE projection = ?1",
                    [&manifest.name],
                    |r| r.get(0),
                )
                .map_err(|e| StoreError::backend("number generation", e))?;
            let generation = generations::next(&manifest, &code_hash, &upcasters, latest);
            let upcasters = serde_json::to_string(&generation.upcasters)
                .map_err(|e| StoreError::backend("register generation", e))?;
            tx.execute(
                "INSERT INTO generations (projection, number, version, code_hash, state, checkpoint, created_ms, upcasters) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![generation.projection, generation.number, generation.version, generation.code_hash, generation.state.as_str(), generation.checkpoint as i64, time::now_millis(), upcasters],
            )
            .map_err(|e| StoreError::backend("register generation", e))?;
            // Its writes are recorded from its first batch (see `WriteHistory`).
            tx.execute(
                "INSERT INTO document_writes (projection, generation, after, upto, redriven, documents) VALUES (?1, ?2, 0, 0, '[]', '[]')",
                params![generation.projection, generation.number],
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

    async fn activate(
        &self,
        generation: &Generation,
        previous: GenerationState,
    ) -> StoreResult<()> {
        let generation = generation.clone();
        self.with_writer(move |conn| activate_blocking(conn, &generation, previous))
            .await
    }

    async fn set_state(
        &self,
        generation: &Generation,
        state: GenerationState,
    ) -> StoreResult<bool> {
        generations::leaving_building(generation, state)?;
        let (projection, number) = (generation.projection.clone(), generation.number);
        self.with_writer(move |conn| {
            let left = conn
                .execute(
                    "UPDATE generations SET state = ?3 WHERE projection = ?1 AND number = ?2 AND state = 'building'",
                    params![projection, number, state.as_str()],
                )
                .map_err(|e| StoreError::backend("record state", e))?
                == 1;
            if left {
                // Never activated now: the indexes it waited for are not wanted.
                conn.execute(
                    "DELETE FROM deferred_indexes WHERE projection = ?1 AND generation = ?2",
                    params![projection, number],
                )
                .map_err(|e| StoreError::backend("record state", e))?;
            }
            Ok(left)
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
}
