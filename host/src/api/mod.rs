//! The HTTP API and the console, served by `refold run` and `refold demo` (axum).
//!
//! Routes (described in `openapi.json`, served at `/openapi.json`):
//! - streams: append with an expected version, read a stream, read the global log;
//! - projections: list and detail with status, pause, resume, rebuild, rollback, dead letters,
//!   and their lag and throughput over the last hour ([`history`]);
//! - hosts: the hosts alive on the store, their leases, and the components it publishes;
//! - read collections: a document by id, and queries (filter, sort, skip, limit);
//! - operations: `/metrics` (Prometheus), `/healthz`, `/readyz`, and the console at `/`.
//!
//! Who may call it is checked first ([`access`]): the `Host`, a browser's `Origin`, JSON bodies
//! only, and the token when one is configured.
//!
//! Every error is JSON, `{"error": {"code": "...", "message": "..."}}`, with a stable code;
//! unknown routes get 404 and known routes with another method 405, in the same shape.

pub mod access;
mod collections;
mod error;
mod history;
mod hosts;
mod ops;
mod projections;
mod streams;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use access::{Access, AccessError};
pub use error::ApiError;

use crate::metrics;
use crate::projector::{CodeSource, HostView};
use crate::store::Store;

/// Largest request body: an append of many events (each at most 1 MiB) or a query.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How often the events/s sampler looks at the counters, and how many looks it keeps.
const RATE_SAMPLE: Duration = Duration::from_secs(1);
const RATE_WINDOW: usize = 5;

/// Samples of the handled-events counters, oldest first.
type RateSamples = VecDeque<(Instant, BTreeMap<String, u64>)>;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Shared {
    store: Arc<dyn Store>,
    view: watch::Receiver<HostView>,
    rates: Arc<Mutex<RateSamples>>,
    /// Lag and throughput over the last hour, for the console's charts.
    history: Arc<Mutex<history::History>>,
    /// Where traces load a generation's code from.
    code: Arc<dyn CodeSource>,
    /// One trace at a time: each may replay a projection's history on this host's cores.
    tracing: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// Events handled per second per projection, over the last few seconds.
    fn rates(&self) -> BTreeMap<String, f64> {
        let Ok(samples) = self.rates.lock() else {
            return BTreeMap::new();
        };
        let (Some((t0, first)), Some((t1, last))) = (samples.front(), samples.back()) else {
            return BTreeMap::new();
        };
        let seconds = t1.duration_since(*t0).as_secs_f64();
        last.iter()
            .map(|(name, total)| {
                let before = first.get(name).copied().unwrap_or(0);
                let rate = if seconds > 0.0 {
                    (total - before.min(*total)) as f64 / seconds
                } else {
                    0.0
                };
                (name.clone(), (rate * 10.0).round() / 10.0)
            })
            .collect()
    }

    fn sample(&self) {
        if let Ok(mut samples) = self.rates.lock() {
            samples.push_back((Instant::now(), metrics::global().handled()));
            while samples.len() > RATE_WINDOW + 1 {
                samples.pop_front();
            }
        }
    }
}

/// Query parameters, with errors in the API's shape.
pub(crate) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::bad_request("invalid_parameter", r.body_text()))?;
        Ok(Self(map))
    }
}

impl Params {
    /// The parameters, refusing any not in `allowed` by name.
    fn only(self, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
        let mut unknown: Vec<&String> = self
            .0
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(self.0),
            Some(key) => Err(ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "unknown parameter `{key}`; this route takes {}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            )),
        }
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        "route_not_found",
        format!("no route for {method} {}; see /openapi.json", uri.path()),
    )
}

/// Give errors that axum produces itself (405, rejections) the API's JSON shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.trim().is_empty() {
        match (status, parts.headers.get(header::ALLOW)) {
            (StatusCode::METHOD_NOT_ALLOWED, Some(allow)) => format!(
                "method not allowed on this route; allowed: {}",
                allow.to_str().unwrap_or("?")
            ),
            _ => status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_owned(),
        }
    } else {
        text
    };
    let mut response = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        response.headers_mut().insert(header::ALLOW, allow.clone());
    }
    response
}

/// The router over a store and a host's view, behind the access checks.
pub(crate) fn router(shared: Shared, access: Arc<Access>) -> Router {
    Router::new()
        .route("/", get(ops::console))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/api/streams", post(streams::append_batch))
        .route(
            "/api/streams/{aggregate_id}",
            post(streams::append).get(streams::read_stream),
        )
        .route("/api/events", get(streams::read_all))
        .route("/api/hosts", get(hosts::list))
        .route("/api/projections", get(projections::list))
        .route("/api/projections/{name}", get(projections::detail))
        .route("/api/projections/{name}/history", get(history::get))
        .route("/api/projections/{name}/pause", post(projections::pause))
        .route("/api/projections/{name}/resume", post(projections::resume))
        .route(
            "/api/projections/{name}/rebuild",
            post(projections::rebuild),
        )
        .route(
            "/api/projections/{name}/rollback",
            post(projections::rollback),
        )
        .route(
            "/api/projections/{name}/dead-letters",
            get(projections::dead_letters),
        )
        .route(
            "/api/projections/{name}/dead-letters/retry",
            post(projections::retry_dead_letters),
        )
        .route(
            "/api/projections/{name}/dead-letters/discard",
            post(projections::discard_dead_letters),
        )
        .route(
            "/api/projections/{name}/collections",
            get(collections::list),
        )
        .route(
            "/api/projections/{name}/collections/{collection}/documents",
            get(collections::find),
        )
        .route(
            "/api/projections/{name}/collections/{collection}/documents/{id}",
            get(collections::get),
        )
        .route(
            "/api/projections/{name}/collections/{collection}/documents/{id}/trace",
            get(collections::trace),
        )
        .route(
            "/api/projections/{name}/collections/{collection}/query",
            post(collections::query),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
        .layer(axum::middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// Serve the API on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    view: watch::Receiver<HostView>,
    access: Access,
    code: Arc<dyn CodeSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Shared {
        store,
        view,
        rates: Arc::default(),
        history: Arc::default(),
        code,
        tracing: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    let sampler = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RATE_SAMPLE);
            loop {
                tick.tick().await;
                shared.sample();
            }
        })
    };
    // The charts' points, apart: a store that is slow to answer delays them, not the rates.
    let charter = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(history::EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tokio::time::timeout(history::EVERY, shared.record_history()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::debug!(%error, "history: the store does not answer"),
                    Err(_) => tracing::debug!("history: the store did not answer in time"),
                }
            }
        })
    };
    let served = axum::serve(listener, router(shared, Arc::new(access)))
        .with_graceful_shutdown(shutdown)
        .await;
    sampler.abort();
    charter.abort();
    served
}
