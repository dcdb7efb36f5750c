//! Appending to and reading streams, and reading the global log.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{Params, Shared};
use crate::domain::{EventFilter, ExpectedVersion, NewEvent, Position};
use crate::metrics;
use crate::store::{Store, StoreResult, StreamAppend};

/// Most events one read returns.
const MAX_READ: u64 = 1_000;
/// Events one read returns when it does not say.
const DEFAULT_READ: u64 = 100;

/// The body of an append.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppendBody {
    #[serde(default)]
    expected_version: Option<Value>,
    events: Vec<NewEvent>,
}

/// Most streams one batch append may name.
pub const MAX_BATCH_STREAMS: usize = 1_000;

/// The body of a batch append: appends to several streams, stored all together or not at all.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchBody {
    streams: Vec<StreamBody>,
}

/// One stream's part of a batch append.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StreamBody {
    aggregate_id: String,
    #[serde(default)]
    expected_version: Option<Value>,
    events: Vec<NewEvent>,
}

fn expected_version(value: Option<Value>) -> Result<ExpectedVersion, ApiError> {
    match value {
        None => Ok(ExpectedVersion::Any),
        Some(Value::Number(n)) => n.as_u64().map(ExpectedVersion::Exact).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_expected_version",
                format!("expectedVersion {n} is not a whole number >= 0"),
            )
        }),
        Some(Value::String(text)) => text
            .parse()
            .map_err(|e: String| ApiError::bad_request("invalid_expected_version", e)),
        Some(other) => Err(ApiError::bad_request(
            "invalid_expected_version",
            format!(
                "expectedVersion must be \"any\", \"no_stream\" or a whole number, not {other}"
            ),
        )),
    }
}

/// Parse a JSON body, naming where it is malformed.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "unreadable_body"
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    }
    // serde_json refuses nesting deeper than 128 levels, so a hostile body cannot exhaust the
    // stack.
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed body: {e}")))
}

pub(super) async fn append(
    State(shared): State<Shared>,
    Path(aggregate_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: AppendBody = parse_body(body)?;
    let expected = expected_version(body.expected_version)?;
    let count = body.events.len() as u64;
    let result = shared
        .store
        .append(&aggregate_id, expected, body.events)
        .await?;
    metrics::global().appended(count);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "aggregateId": aggregate_id,
            "firstPosition": result.first_position,
            "lastPosition": result.last_position,
            "version": result.version,
        })),
    ))
}

/// Append to several streams in one request, atomically: every stream's events are stored, in
/// the order given, or none are (a conflict on one stream, naming it, stores nothing). For bulk
/// writers and importers: one transaction, one `fsync`, for the whole batch.
pub(super) async fn append_batch(
    State(shared): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: BatchBody = parse_body(body)?;
    if body.streams.is_empty() || body.streams.len() > MAX_BATCH_STREAMS {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!(
                "a batch append names 1 to {MAX_BATCH_STREAMS} streams, not {}",
                body.streams.len()
            ),
        ));
    }
    let mut count = 0u64;
    let appends = body
        .streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            count += stream.events.len() as u64;
            let expected = expected_version(stream.expected_version)
                .map_err(|e| e.within(&format!("streams[{i}] (`{}`)", stream.aggregate_id)))?;
            Ok(StreamAppend {
                aggregate_id: stream.aggregate_id,
                expected,
                events: stream.events,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let ids: Vec<String> = appends.iter().map(|a| a.aggregate_id.clone()).collect();
    let results = shared.store.append_all(appends).await?;
    metrics::global().appended(count);
    let results: Vec<Value> = ids
        .iter()
        .zip(&results)
        .map(|(id, result)| {
            json!({
                "aggregateId": id,
                "firstPosition": result.first_position,
                "lastPosition": result.last_position,
                "version": result.version,
            })
        })
        .collect();
    Ok((StatusCode::CREATED, Json(json!({ "results": results }))))
}

pub(super) async fn read_stream(
    State(shared): State<Shared>,
    Path(aggregate_id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params.only(&["fromVersion", "limit"])?;
    let from = params.number("fromVersion")?.unwrap_or(1).max(1);
    let limit = limit(&params)?;
    let events = shared
        .store
        .read_stream(&aggregate_id, from, limit as usize)
        .await?;
    if events.is_empty() && from == 1 {
        return Err(ApiError::not_found(
            "stream_not_found",
            format!("stream `{aggregate_id}` has no events"),
        ));
    }
    Ok(Json(json!({
        "aggregateId": aggregate_id,
        "events": events.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
    })))
}

fn limit(params: &HashMap<String, String>) -> Result<u64, ApiError> {
    match params.number("limit")? {
        None => Ok(DEFAULT_READ),
        Some(n) if (1..=MAX_READ).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("limit {n} is outside 1..={MAX_READ}"),
        )),
    }
}

pub(super) async fn read_all(
    State(shared): State<Shared>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params.only(&["after", "since", "limit", "eventType", "aggregateType"])?;
    let after = match (params.number("after")?, params.get("since")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "give `after` (a position) or `since` (a time), not both",
            ));
        }
        (None, Some(since)) => first_since(shared.store.as_ref(), parse_time(since)?).await?,
        (after, None) => after.unwrap_or(0),
    };
    let limit = limit(&params)?;
    let list = |key: &str| {
        params
            .get(key)
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let filter = EventFilter {
        event_types: list("eventType"),
        aggregate_types: list("aggregateType"),
    };
    let page = shared
        .store
        .read_all(after, limit as usize, &filter)
        .await?;
    let head = shared.store.head().await?;
    Ok(Json(json!({
        "events": page.events.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
        "next": page.scanned_to,
        "head": head,
    })))
}

/// A time given in UTC as RFC 3339 (`2026-11-29T10:00:00Z`, with or without fractions of a
/// second) or as whole milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "since={text} is not a time: give RFC 3339 (2026-11-29T10:00:00Z) or \
                     milliseconds since the Unix epoch"
                ),
            )
        })
}

/// `since` as the position to read after: the position before the first event stamped at or
/// after `since_ms`, found by bisection over the log in a few single-event reads. The log's
/// times grow with its positions (each event is stamped when it is stored; an imported history
/// keeps its own times, and where those go back the answer is near rather than exact).
async fn first_since(store: &dyn Store, since_ms: i64) -> StoreResult<Position> {
    let all = EventFilter::default();
    // Every event before `low` is stamped before `since`; the first event at or after `high`,
    // if any, is not.
    let (mut low, mut high) = (1, store.head().await?.saturating_add(1));
    while low < high {
        let middle = low + (high - low) / 2;
        let page = store.read_all(middle - 1, 1, &all).await?;
        match page.events.first() {
            Some(event) if event.timestamp_ms < since_ms => low = event.position + 1,
            _ => high = middle,
        }
    }
    Ok(low - 1)
}

/// Typed access to query parameters.
pub(super) trait NumberParam {
    /// A whole-number parameter, if given.
    fn number(&self, key: &str) -> Result<Option<u64>, ApiError>;
}

impl NumberParam for HashMap<String, String> {
    fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("{key}={v} is not a whole number >= 0"),
                    )
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose events are stamped with `times`, one event per stream.
    async fn stamped(times: &[i64]) -> (tempfile::TempDir, std::sync::Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let uri = format!("sqlite://{}", dir.path().join("log.db").display());
        let store = crate::store::open(&uri).await.expect("open the store");
        for (i, ms) in times.iter().enumerate() {
            let event = NewEvent {
                id: None,
                aggregate_type: "Thing".into(),
                event_type: "Made".into(),
                event_data: json!({}),
                metadata: json!({}),
                timestamp_ms: Some(*ms),
            };
            store
                .append(&format!("thing-{i}"), ExpectedVersion::Any, vec![event])
                .await
                .expect("append");
        }
        (dir, store)
    }

    #[tokio::test]
    async fn since_finds_the_first_event_stamped_at_or_after_a_time() {
        let (_dir, empty) = stamped(&[]).await;
        assert_eq!(first_since(empty.as_ref(), 5).await.ok(), Some(0));

        // Positions 1 to 9; 3 to 6 share one millisecond.
        let times = [10, 20, 30, 30, 30, 30, 40, 50, 60];
        let (_dir, store) = stamped(&times).await;
        for (since, after) in [
            (i64::MIN, 0),
            (10, 0),
            (11, 1),
            (20, 1),
            (30, 2),
            (31, 6),
            (45, 7),
            (60, 8),
            (61, 9),
            (i64::MAX, 9),
        ] {
            assert_eq!(
                first_since(store.as_ref(), since).await.ok(),
                Some(after),
                "since {since}"
            );
        }
    }
}
