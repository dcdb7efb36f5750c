//! Operations: health, readiness, metrics, the OpenAPI document and the console.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde_json::{Value, json};

use super::Shared;
use super::error::ApiError;
use crate::metrics::{self, StoreGauges};

const CONSOLE: &str = include_str!("console.html");
const OPENAPI: &str = include_str!("openapi.json");

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready once the host has deployed its folder and the store answers.
pub(super) async fn readyz(State(shared): State<Shared>) -> Result<Json<Value>, ApiError> {
    if !shared.view.borrow().ready {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the host is still loading its projections",
        ));
    }
    // The route needs no token: the store's own error (which may name its servers) goes to
    // the log, not to the caller.
    let head = shared.store.head().await.map_err(|error| {
        tracing::warn!(%error, "readiness: the store does not answer");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the store does not answer (the host's log says why)",
        )
    })?;
    Ok(Json(json!({ "status": "ready", "head": head })))
}

pub(super) async fn metrics(State(shared): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let head = shared.store.head().await?;
    let generations = shared.store.all_generations().await?;
    let serving = super::history::serving_checkpoints(&generations);
    let mut lag_seconds = Vec::new();
    for (name, checkpoint) in serving {
        lag_seconds.push((
            name,
            super::projections::lag_seconds(&shared, checkpoint, head).await?,
        ));
    }
    let gauges = StoreGauges {
        head,
        generations: generations
            .iter()
            .map(|g| {
                (
                    g.projection.clone(),
                    g.number,
                    g.state.as_str(),
                    g.checkpoint,
                )
            })
            .collect(),
        paused: shared.store.paused().await?.into_iter().collect(),
        lag_seconds,
        host: metrics::host().to_owned(),
        owned: shared.store.held_leases(),
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&gauges),
    ))
}

pub(super) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub(super) async fn console() -> Html<&'static str> {
    Html(CONSOLE)
}
