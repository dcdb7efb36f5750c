//! Read collections: a document by id, and queries.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::streams::{NumberParam, parse_body};
use super::{Params, Shared};
use crate::control;
use crate::domain::{GenerationState, Position};
use crate::store::Query;
use crate::trace::TraceError;

/// The collections the projection's active generation serves; 404 for an unknown projection
/// or collection, so a query can only reach a projection's own collections.
async fn served(shared: &Shared, name: &str) -> Result<Vec<String>, ApiError> {
    let generations = control::generations_of(shared.store.as_ref(), name).await?;
    match generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active)
    {
        Some(active) => Ok(active.collections.clone()),
        None => Err(ApiError::not_found(
            "collection_not_found",
            format!("{name} serves no collection yet: its first generation is still building"),
        )),
    }
}

/// Longest a read may wait for `atLeast`, and how long it waits when `timeoutMs` is not given.
const MAX_WAIT_MS: u64 = 30_000;
const DEFAULT_WAIT_MS: u64 = 5_000;

/// How often a waiting read looks at the checkpoint again.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// A read that must reflect the log up to a position (read-your-writes): the position an append
/// answered, and how long to wait for it.
#[derive(Debug, Clone, Copy)]
struct AtLeast {
    position: Position,
    timeout_ms: u64,
}

impl AtLeast {
    fn from(position: Option<u64>, timeout_ms: Option<u64>) -> Result<Option<Self>, ApiError> {
        let timeout_ms = timeout_ms.unwrap_or(DEFAULT_WAIT_MS);
        if timeout_ms > MAX_WAIT_MS {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("timeoutMs={timeout_ms} is over the most a read may wait, {MAX_WAIT_MS}"),
            ));
        }
        Ok(position.map(|position| Self {
            position,
            timeout_ms,
        }))
    }
}

/// The projection's active generation: its number and checkpoint (0 for none yet).
async fn active(
    shared: &Shared,
    name: &str,
) -> Result<(Option<u32>, Position, Option<String>), ApiError> {
    let generations = control::generations_of(shared.store.as_ref(), name).await?;
    let active = generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active);
    Ok((
        active.map(|g| g.number),
        active.map(|g| g.checkpoint).unwrap_or(0),
        active.and_then(|g| g.last_error.clone()),
    ))
}

/// Answer `read` once the projection's active generation has folded in every event up to
/// `at_least` (its checkpoint has reached it), and read again if another generation became
/// active between the wait and the read (a rollback, a cut-over). `409 position_not_in_log` at
/// once when the log does not reach that position, `503 not_caught_up` with how far it is when
/// the wait runs out. A generation's checkpoint only moves forward while the host runs (after a
/// power cut the embedded store may find it earlier, see `docs/reliability.md`), so the same
/// generation after the read still covers the position.
async fn read_at_least<T, F, Fut>(
    shared: &Shared,
    name: &str,
    at_least: Option<AtLeast>,
    mut read: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let Some(AtLeast {
        position,
        timeout_ms,
    }) = at_least
    else {
        return read().await;
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    let head = shared.store.head().await?;
    if position > head {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "position_not_in_log",
            format!("atLeast={position} is past the end of the log (its last position is {head})"),
        ));
    }
    loop {
        let (number, checkpoint, error) = active(shared, name).await?;
        if checkpoint >= position {
            let answer = read().await?;
            if active(shared, name).await?.0 == number {
                return Ok(answer);
            }
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = match error {
                Some(error) => format!("; it stopped on: {error}"),
                None => String::new(),
            };
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_caught_up",
                format!(
                    "{name} has folded in the log up to position {checkpoint}, not yet \
                     {position}, after {timeout_ms} ms{why}"
                ),
            ));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

async fn check(shared: &Shared, name: &str, collection: &str) -> Result<(), ApiError> {
    let collections = served(shared, name).await?;
    if collections.iter().any(|c| c == collection) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "collection_not_found",
            format!(
                "{name} has no collection `{collection}` (it serves: {})",
                collections.join(", ")
            ),
        ))
    }
}

pub(super) async fn list(
    State(shared): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let collections = served(&shared, &name).await?;
    Ok(Json(
        json!({ "projection": name, "collections": collections }),
    ))
}

pub(super) async fn get(
    State(shared): State<Shared>,
    Path((name, collection, id)): Path<(String, String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params.only(&["atLeast", "timeoutMs"])?;
    let at_least = AtLeast::from(params.number("atLeast")?, params.number("timeoutMs")?)?;
    let (name, collection) = (name.as_str(), collection.as_str());
    read_at_least(&shared, name, at_least, || async {
        check(&shared, name, collection).await?;
        match shared.store.get_document(name, collection, &id).await? {
            Some(document) => Ok(Json(document)),
            None => Err(ApiError::not_found(
                "document_not_found",
                format!("{name}/{collection} has no document `{id}`"),
            )),
        }
    })
    .await
}

async fn run(
    shared: &Shared,
    name: &str,
    collection: &str,
    query: Query,
    at_least: Option<AtLeast>,
) -> Result<Json<Value>, ApiError> {
    read_at_least(shared, name, at_least, || async {
        check(shared, name, collection).await?;
        let documents = shared
            .store
            .find_documents(name, collection, &query)
            .await?;
        Ok(Json(
            json!({ "count": documents.len(), "documents": documents }),
        ))
    })
    .await
}

fn json_param(
    params: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<Value>, ApiError> {
    params
        .get(key)
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request("invalid_query", format!("{key} is not valid JSON: {e}"))
            })
        })
        .transpose()
}

pub(super) async fn find(
    State(shared): State<Shared>,
    Path((name, collection)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = params.only(&["filter", "sort", "limit", "skip", "atLeast", "timeoutMs"])?;
    let at_least = AtLeast::from(params.number("atLeast")?, params.number("timeoutMs")?)?;
    let filter = json_param(&params, "filter")?;
    let sort = params.get("sort").map(|s| {
        if s.trim_start().starts_with('{') {
            json_param(&params, "sort")
        } else {
            Ok(Some(Value::String(s.clone())))
        }
    });
    let sort = sort.transpose()?.flatten();
    let query = Query::parse(
        filter.as_ref(),
        sort.as_ref(),
        params.number("skip")?,
        params.number("limit")?,
    )?;
    run(&shared, &name, &collection, query, at_least).await
}

/// The body of a query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    sort: Option<Value>,
    #[serde(default)]
    skip: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default, rename = "atLeast")]
    at_least: Option<u64>,
    #[serde(default, rename = "timeoutMs")]
    timeout_ms: Option<u64>,
}

pub(super) async fn query(
    State(shared): State<Shared>,
    Path((name, collection)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: QueryBody = parse_body(body)?;
    let query = Query::parse(
        body.filter.as_ref(),
        body.sort.as_ref(),
        body.skip,
        body.limit,
    )?;
    let at_least = AtLeast::from(body.at_least, body.timeout_ms)?;
    run(&shared, &name, &collection, query, at_least).await
}

/// The events that changed one document (see [`crate::trace`]), replayed with the generation's
/// code from this host's code cache. One trace runs at a time: another is answered 503
/// `trace_busy` meanwhile.
pub(super) async fn trace(
    State(shared): State<Shared>,
    Path((name, collection, id)): Path<(String, String, String)>,
    params: Params,
) -> Result<Json<crate::trace::Trace>, ApiError> {
    let params = params.only(&["generation", "full"])?;
    let number = match params.number("generation")? {
        Some(n) => Some(u32::try_from(n).map_err(|_| {
            ApiError::bad_request("invalid_parameter", format!("generation={n} is too large"))
        })?),
        None => None,
    };
    let full = match params.get("full").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("full={other} is not true or false"),
            ));
        }
    };
    let generation = control::traced_generation(shared.store.as_ref(), &name, number).await?;
    let Ok(_turn) = shared.tracing.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "trace_busy",
            "another trace is running on this host; try again when it has answered",
        ));
    };
    let code = std::sync::Arc::clone(&shared.code);
    let recorded = generation.clone();
    let handler = tokio::task::spawn_blocking(move || code.load_generation(&recorded))
        .await
        .map_err(|e| ApiError::from(crate::store::StoreError::backend("load code", e)))?
        .map_err(|error| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "code_unavailable",
                format!(
                    "this host cannot load the code of generation {} of {name}: {error}",
                    generation.number
                ),
            )
        })?;
    let store = std::sync::Arc::clone(&shared.store);
    let progress = |_, _| {};
    let traced = crate::trace::trace(
        store,
        handler,
        &generation,
        &collection,
        &id,
        full,
        &progress,
    );
    match traced.await {
        Ok(trace) => Ok(Json(trace)),
        Err(TraceError::UnknownCollection(message)) => {
            Err(ApiError::not_found("collection_not_found", message))
        }
        Err(TraceError::InvalidId(message)) => {
            Err(ApiError::bad_request("invalid_parameter", message))
        }
        Err(TraceError::Moving(message)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "state_conflict",
            message,
        )),
        Err(TraceError::Store(error)) => Err(error.into()),
    }
}
