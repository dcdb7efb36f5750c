//! Projections: status, and the operator commands.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::ApiError;
use super::streams::{NumberParam, parse_body};
use super::{Params, Shared};
use crate::control;
use crate::domain::generation::progress_percent;
use crate::domain::{EventFilter, Generation, GenerationState, time};
use crate::projector::{ProjectorState, ProjectorStatus};
use crate::store::{DeadLetterKey, Lease, MAX_DEAD_LETTER_PAGE};

fn generation_json(
    g: &Generation,
    head: u64,
    running: Option<&ProjectorStatus>,
    lease: Option<&Lease>,
) -> Value {
    let checkpoint = running.map_or(g.checkpoint, |s| s.checkpoint.max(g.checkpoint));
    json!({
        "owner": lease.filter(|l| l.live).map(|l| &l.owner),
        "leaseAgeMs": lease.and_then(|l| l.age_ms),
        "number": g.number,
        "version": g.version,
        "state": g.state,
        "checkpoint": checkpoint,
        "lagEvents": head.saturating_sub(checkpoint),
        "progressPercent": progress_percent(checkpoint, head),
        "codeHash": g.code_hash,
        "upcasters": g.upcasters,
        "collections": g.collections,
        "running": running.is_some_and(|s| s.state != ProjectorState::Stopped),
        "lastError": running.and_then(|s| s.error.clone()).or_else(|| g.last_error.clone()),
    })
}

/// Age in seconds of the first event after `checkpoint` (0 when caught up).
pub(super) async fn lag_seconds(
    shared: &Shared,
    checkpoint: u64,
    head: u64,
) -> Result<f64, ApiError> {
    if checkpoint >= head {
        return Ok(0.0);
    }
    let page = shared
        .store
        .read_all(checkpoint, 1, &EventFilter::default())
        .await?;
    Ok(page.events.first().map_or(0.0, |e| {
        ((time::now_millis() - e.timestamp_ms).max(0) as f64 / 1000.0 * 1000.0).round() / 1000.0
    }))
}

/// Every projection the store or this host knows, or only `only`.
pub(super) async fn views(
    shared: &Shared,
    only: Option<&str>,
) -> Result<(u64, Vec<Value>), ApiError> {
    let head = shared.store.head().await?;
    let paused = shared.store.paused().await?;
    let mut by_name: BTreeMap<String, Vec<Generation>> = BTreeMap::new();
    for g in shared.store.all_generations().await? {
        by_name.entry(g.projection.clone()).or_default().push(g);
    }
    let host = shared.view.borrow().clone();
    let statuses: Vec<ProjectorStatus> =
        host.projectors.iter().map(|r| r.borrow().clone()).collect();
    let rates = shared.rates();
    let dead_letters = shared.store.count_dead_letters().await?;
    // Where several hosts share the store: who runs each generation.
    let leases = shared.store.leases().await?;
    let held = shared.store.held_leases();
    let names: BTreeSet<String> = by_name
        .keys()
        .chain(host.deployed.keys())
        .filter(|n| only.is_none_or(|o| o == n.as_str()))
        .cloned()
        .collect();
    let mut out = Vec::new();
    for name in names {
        let generations = by_name.remove(&name).unwrap_or_default();
        let status_of = |number: u32| {
            statuses
                .iter()
                .find(|s| s.projection == name && s.generation == number)
        };
        let lease_of = |number: u32| {
            leases
                .iter()
                .find(|l| l.projection == name && l.generation == number)
        };
        let json_of =
            |g: &Generation| generation_json(g, head, status_of(g.number), lease_of(g.number));
        let active = generations
            .iter()
            .rfind(|g| g.state == GenerationState::Active);
        let building = generations
            .iter()
            .rfind(|g| g.state == GenerationState::Building);
        let serving = crate::domain::generation::serving(&generations);
        let checkpoint = serving.map_or(0, |g| {
            status_of(g.number).map_or(g.checkpoint, |s| s.checkpoint.max(g.checkpoint))
        });
        let last_error = [active, building].into_iter().flatten().find_map(|g| {
            status_of(g.number)
                .and_then(|s| s.error.clone())
                .or_else(|| g.last_error.clone())
        });
        let running: Vec<&ProjectorStatus> = statuses
            .iter()
            .filter(|s| s.projection == name && s.state != ProjectorState::Stopped)
            .collect();
        // Run by another host, under a lease it renews: its state is read from the store.
        let elsewhere = [active, building].into_iter().flatten().any(|g| {
            lease_of(g.number).is_some_and(|l| l.live && !held.contains(&(name.clone(), g.number)))
        });
        let state = if paused.contains(&name) {
            "paused"
        } else if last_error.is_some() {
            "failed"
        } else if running.is_empty() && !elsewhere {
            "stopped"
        } else if active.is_some() && building.is_some() {
            "rebuilding"
        } else if active.is_none() {
            "replaying"
        } else if running.is_empty() && checkpoint >= head
            || !running.is_empty() && running.iter().all(|s| s.state == ProjectorState::Live)
        {
            "live"
        } else {
            "catching_up"
        };
        let deployed = host.deployed.get(&name);
        out.push(json!({
            "name": name,
            "state": state,
            "paused": paused.contains(&name),
            "declaredVersion": deployed.map(|(v, _)| *v),
            "deployedCodeHash": deployed.map(|(_, h)| h.clone()),
            "head": head,
            "checkpoint": checkpoint,
            "lagEvents": head.saturating_sub(checkpoint),
            "lagSeconds": lag_seconds(shared, checkpoint, head).await?,
            "eventsPerSecond": rates.get(&name).copied().unwrap_or(0.0),
            "lastError": last_error,
            "deadLetters": dead_letters.get(&name).copied().unwrap_or(0),
            "active": active.map(json_of),
            "building": building.map(json_of),
            "generations": generations.iter().map(json_of).collect::<Vec<_>>(),
        }));
    }
    Ok((head, out))
}

pub(super) async fn list(
    State(shared): State<Shared>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    let (head, projections) = views(&shared, None).await?;
    let refused = shared.store.refusals().await?;
    Ok(Json(
        json!({ "head": head, "projections": projections, "refused": refused }),
    ))
}

pub(super) async fn detail(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    let (_, mut projections) = views(&shared, Some(&name)).await?;
    match projections.pop() {
        Some(projection) => Ok(Json(projection)),
        None => Err(control::generations_of(shared.store.as_ref(), &name)
            .await
            .err()
            .map_or_else(
                || {
                    ApiError::not_found(
                        "projection_not_found",
                        format!("no projection named `{name}`"),
                    )
                },
                ApiError::from,
            )),
    }
}

fn accepted(name: &str, action: &str, message: String, extra: Value) -> (StatusCode, Json<Value>) {
    let mut body = json!({ "projection": name, "action": action, "message": message });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    (StatusCode::ACCEPTED, Json(body))
}

pub(super) async fn pause(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    control::set_paused(shared.store.as_ref(), &name, true).await?;
    Ok(accepted(
        &name,
        "pause",
        format!(
            "{name} is paused: its projectors stop at their next batch boundary; reads keep being served"
        ),
        json!({}),
    ))
}

pub(super) async fn resume(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    control::set_paused(shared.store.as_ref(), &name, false).await?;
    Ok(accepted(
        &name,
        "resume",
        format!("{name} resumes from its checkpoints"),
        json!({}),
    ))
}

pub(super) async fn rebuild(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (generation, active) = control::rebuild(shared.store.as_ref(), &name).await?;
    Ok(accepted(
        &name,
        "rebuild",
        format!(
            "generation {} builds from position 0; generation {} keeps serving until it has caught up",
            generation.number, active.number
        ),
        json!({ "generation": generation.number }),
    ))
}

pub(super) async fn rollback(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (target, from) = control::rollback(shared.store.as_ref(), &name).await?;
    Ok(accepted(
        &name,
        "rollback",
        format!(
            "generation {} is active again; generation {} is rolled back",
            target.number, from.number
        ),
        json!({ "generation": target.number }),
    ))
}

/// A page of a projection's dead letters: `limit` (1 to 1,000, default 1,000) after `after`
/// (`GENERATION:POSITION`, the `next` of the page before), with `next` set when more may follow.
pub(super) async fn dead_letters(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params.only(&["after", "limit"])?;
    let limit = match params.number("limit")? {
        None => MAX_DEAD_LETTER_PAGE,
        Some(n) if (1..=MAX_DEAD_LETTER_PAGE as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("limit {n} is outside 1..={MAX_DEAD_LETTER_PAGE}"),
            ));
        }
    };
    let after = match params.get("after") {
        None => None,
        Some(text) => {
            let parsed = text
                .split_once(':')
                .and_then(|(g, p)| Some((g.parse::<u32>().ok()?, p.parse::<u64>().ok()?)));
            let Some((generation, position)) = parsed else {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    format!("after `{text}` is not GENERATION:POSITION (the `next` of a page)"),
                ));
            };
            Some(DeadLetterKey {
                projection: name.clone(),
                generation,
                position,
            })
        }
    };
    let letters =
        control::dead_letter_page(shared.store.as_ref(), &name, after.as_ref(), limit).await?;
    let next = match letters.last() {
        Some(last) if letters.len() == limit => {
            json!(format!("{}:{}", last.generation, last.position))
        }
        _ => Value::Null,
    };
    Ok(Json(
        json!({ "projection": name, "deadLetters": letters, "next": next }),
    ))
}

/// The body of a discard or a retry: the positions, or none for all.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscardBody {
    #[serde(default)]
    positions: Option<Vec<u64>>,
}

pub(super) async fn retry_dead_letters(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: DiscardBody = match &body {
        Ok(bytes) if bytes.is_empty() => DiscardBody::default(),
        _ => parse_body(body)?,
    };
    let marked =
        control::retry_dead_letters(shared.store.as_ref(), &name, body.positions.as_deref())
            .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "projection": name, "retrying": marked })),
    ))
}

pub(super) async fn discard_dead_letters(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: DiscardBody = match &body {
        Ok(bytes) if bytes.is_empty() => DiscardBody::default(),
        _ => parse_body(body)?,
    };
    let discarded =
        control::discard_dead_letters(shared.store.as_ref(), &name, body.positions.as_deref())
            .await?;
    Ok(Json(json!({ "projection": name, "discarded": discarded })))
}
