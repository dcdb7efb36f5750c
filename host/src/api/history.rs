//! Lag and throughput over time: what the console's charts draw. Each host samples every
//! projection it knows on the store every [`EVERY`] and keeps the last [`KEPT`] in memory, so a
//! restart starts the charts afresh and nothing is written to the store.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::error::ApiError;
use super::streams::NumberParam;
use super::{Params, Shared};
use crate::control;
use crate::domain::{Generation, GenerationState, time};
use crate::store::StoreResult;

/// How often a point is taken.
pub(super) const EVERY: Duration = Duration::from_secs(2);
/// How far back the points go.
const KEPT: Duration = Duration::from_secs(3_600);
/// Points kept per projection.
const POINTS: usize = (KEPT.as_millis() / EVERY.as_millis()) as usize;

/// One look at a projection.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// When, in ms since the Unix epoch.
    at_ms: i64,
    /// Events this host's projectors handled per second, over the last few seconds.
    rate: f32,
    /// The serving generation's checkpoint (the active one, else the one building).
    checkpoint: u64,
    /// Positions between it and the head.
    lag: u64,
}

/// The points of every projection, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    points: BTreeMap<String, VecDeque<Point>>,
}

/// The checkpoint of each projection's serving generation: the active one, else the last one
/// building.
pub(super) fn serving_checkpoints(generations: &[Generation]) -> BTreeMap<String, u64> {
    let mut serving: BTreeMap<String, u64> = BTreeMap::new();
    for g in generations {
        if g.state == GenerationState::Active
            || (g.state == GenerationState::Building && !serving.contains_key(&g.projection))
        {
            serving.insert(g.projection.clone(), g.checkpoint);
        }
    }
    serving
}

impl Shared {
    /// Take a point of every projection on the store; forget projections no longer there.
    pub(super) async fn record_history(&self) -> StoreResult<()> {
        let head = self.store.head().await?;
        let serving = serving_checkpoints(&self.store.all_generations().await?);
        let rates = self.rates();
        let at_ms = time::now_millis();
        let Ok(mut history) = self.history.lock() else {
            return Ok(());
        };
        history.points.retain(|name, _| serving.contains_key(name));
        for (name, checkpoint) in serving {
            let points = history.points.entry(name.clone()).or_default();
            if points.len() == POINTS {
                points.pop_front();
            }
            points.push_back(Point {
                at_ms,
                rate: rates.get(&name).copied().unwrap_or(0.0) as f32,
                checkpoint,
                lag: head.saturating_sub(checkpoint),
            });
        }
        Ok(())
    }
}

/// `GET /api/projections/{name}/history`: the points taken after `after` (ms since the Unix
/// epoch; all kept points when not given), oldest first.
pub(super) async fn get(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params.only(&["after"])?;
    let after = params
        .number("after")?
        .map_or(i64::MIN, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
    control::generations_of(shared.store.as_ref(), &name).await?;
    let points: Vec<Value> = shared
        .history
        .lock()
        .ok()
        .and_then(|history| {
            history.points.get(&name).map(|points| {
                points
                    .iter()
                    .filter(|p| p.at_ms > after)
                    .map(|p| {
                        json!({
                            "timeMs": p.at_ms,
                            "eventsPerSecond": p.rate,
                            "checkpoint": p.checkpoint,
                            "lagEvents": p.lag,
                        })
                    })
                    .collect()
            })
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "projection": name,
        "intervalMs": EVERY.as_millis() as u64,
        "keptMs": KEPT.as_millis() as u64,
        "points": points,
    })))
}
