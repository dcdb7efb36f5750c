//! Read collections: a document by id, and queries.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::streams::{NumberParam, parse_body};
use super::{Params, Shared};
use crate::control;
use crate::domain::GenerationState;
use crate::store::Query;

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
) -> Result<Json<Value>, ApiError> {
    check(&shared, &name, &collection).await?;
    match shared.store.get_document(&name, &collection, &id).await? {
        Some(document) => Ok(Json(document)),
        None => Err(ApiError::not_found(
            "document_not_found",
            format!("{name}/{collection} has no document `{id}`"),
        )),
    }
}

async fn run(
    shared: &Shared,
    name: &str,
    collection: &str,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    check(shared, name, collection).await?;
    let documents = shared
        .store
        .find_documents(name, collection, &query)
        .await?;
    Ok(Json(
        json!({ "count": documents.len(), "documents": documents }),
    ))
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
    let params = params.only(&["filter", "sort", "limit", "skip"])?;
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
    run(&shared, &name, &collection, query).await
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
    run(&shared, &name, &collection, query).await
}
