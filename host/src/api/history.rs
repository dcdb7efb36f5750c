//! Lag and throughput over time: what the console's charts draw. Each host samples every
//! projection it knows on the store every [`EVERY`] and keeps the last [`KEPT`] in memory, so a
//! restart starts the charts afresh and nothing is written to the store.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::error::ApiError;
use super::streams::NumberParam;
use super::{Params, Shared};
use crate::control;
use crate::domain::{Generation, generation, time};
use crate::store::StoreResult;

/// How often a point is taken.
pub(super) const EVERY: Duration = Duration::from_secs(2);
/// How far back the points go.
const KEPT: Duration = Duration::from_secs(3_600);
/// Points kept per projection.
const POINTS: usize = (KEPT.as_millis() / EVERY.as_millis()) as usize;

/// One look at a projection.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// When, in ms since the Unix epoch.
    at_ms: i64,
    /// Events this host's projectors handled per second, over the last few seconds.
    rate: f32,
    /// The serving generation's checkpoint (see [`generation::serving`]).
    checkpoint: u64,
    /// Positions between it and the head.
    lag: u64,
}

/// The points of every projection, oldest first: at most [`POINTS`] each, none older than
/// [`KEPT`].
#[derive(Debug, Default)]
pub(crate) struct History {
    points: BTreeMap<String, VecDeque<Point>>,
}

impl History {
    /// Add a point taken at `at_ms` for each projection of `serving` (name → checkpoint); forget
    /// the projections not in it and the points older than [`KEPT`].
    fn record(
        &mut self,
        at_ms: i64,
        head: u64,
        serving: BTreeMap<String, u64>,
        rates: &BTreeMap<String, f64>,
    ) {
        self.points.retain(|name, _| serving.contains_key(name));
        let oldest = at_ms - KEPT.as_millis() as i64;
        for (name, checkpoint) in serving {
            let rate = rates.get(&name).copied().unwrap_or(0.0) as f32;
            let points = self.points.entry(name).or_default();
            while points.len() >= POINTS || points.front().is_some_and(|p| p.at_ms <= oldest) {
                points.pop_front();
            }
            points.push_back(Point {
                at_ms,
                rate,
                checkpoint,
                lag: head.saturating_sub(checkpoint),
            });
        }
    }

    /// The points of `name` taken after `after_ms`, oldest first; `None` for a projection never
    /// sampled.
    fn after(&self, name: &str, after_ms: i64) -> Option<Vec<Point>> {
        self.points.get(name).map(|points| {
            points
                .iter()
                .filter(|p| p.at_ms > after_ms)
                .copied()
                .collect()
        })
    }
}

/// The history, even after a panic while it was held: it holds only samples.
fn lock(history: &Mutex<History>) -> MutexGuard<'_, History> {
    history.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The checkpoint of each projection's serving generation ([`generation::serving`]).
/// `generations` are every projection's, in number order within each.
pub(super) fn serving_checkpoints(generations: &[Generation]) -> BTreeMap<String, u64> {
    let mut by_name: BTreeMap<&str, Vec<Generation>> = BTreeMap::new();
    for g in generations {
        by_name.entry(&g.projection).or_default().push(g.clone());
    }
    by_name
        .into_iter()
        .filter_map(|(name, generations)| {
            generation::serving(&generations).map(|g| (name.to_owned(), g.checkpoint))
        })
        .collect()
}

impl Shared {
    /// Take a point of every projection on the store.
    pub(super) async fn record_history(&self) -> StoreResult<()> {
        let head = self.store.head().await?;
        let serving = serving_checkpoints(&self.store.all_generations().await?);
        let rates = self.rates();
        lock(&self.history).record(time::now_millis(), head, serving, &rates);
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
    let found = lock(&shared.history).after(&name, after);
    let points = match found {
        Some(points) => points,
        None => {
            // Not sampled yet: an unknown projection is a 404, a new one has no points.
            control::generations_of(shared.store.as_ref(), &name).await?;
            Vec::new()
        }
    };
    let points: Vec<Value> = points
        .iter()
        .map(|p| {
            json!({
                "timeMs": p.at_ms,
                "eventsPerSecond": p.rate,
                "checkpoint": p.checkpoint,
                "lagEvents": p.lag,
            })
        })
        .collect();
    Ok(Json(json!({
        "projection": name,
        "intervalMs": EVERY.as_millis() as u64,
        "keptMs": KEPT.as_millis() as u64,
        "points": points,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(names: &[(&str, u64)]) -> BTreeMap<String, u64> {
        names.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    }

    #[test]
    fn points_are_kept_an_hour_at_most_and_forgotten_with_their_projection() {
        let mut history = History::default();
        let rates = BTreeMap::from([("a".to_owned(), 12.5)]);
        let every = EVERY.as_millis() as i64;
        // Two hours of points for `a`, and `b` for the first one only.
        for n in 0..(2 * POINTS as i64) {
            let names: &[(&str, u64)] = if n == 0 {
                &[("a", 1), ("b", 5)]
            } else {
                &[("a", 1)]
            };
            history.record(n * every, 10, serving(names), &rates);
        }
        let last = (2 * POINTS as i64 - 1) * every;
        let points = history.after("a", i64::MIN).expect("a is sampled");
        assert_eq!(points.len(), POINTS);
        assert!(
            points
                .iter()
                .all(|p| p.at_ms > last - KEPT.as_millis() as i64)
        );
        assert_eq!(
            points.last().map(|p| (p.rate, p.checkpoint, p.lag)),
            Some((12.5, 1, 9))
        );
        assert_eq!(history.after("b", i64::MIN), None, "b left the store");
        // `after` gives only newer points.
        assert_eq!(history.after("a", last - every).map(|p| p.len()), Some(1));

        // A gap longer than the window leaves only the new point.
        history.record(
            last + 2 * KEPT.as_millis() as i64,
            10,
            serving(&[("a", 3)]),
            &rates,
        );
        assert_eq!(history.after("a", i64::MIN).map(|p| p.len()), Some(1));
    }
}
