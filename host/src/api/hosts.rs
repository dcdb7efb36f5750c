//! Several hosts on one store: who is alive, who runs what, what is published.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{Params, Shared};

/// `GET /api/hosts`: this host, the hosts alive on the store with the generations each would
/// run, every lease, and the components the store publishes.
pub(super) async fn list(
    State(shared): State<Shared>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    let hosts: Vec<Value> = shared
        .store
        .live_hosts()
        .await?
        .into_iter()
        .map(|h| {
            let wants: Vec<Value> = h
                .wants
                .iter()
                .map(|(projection, number)| json!({ "projection": projection, "generation": number }))
                .collect();
            json!({ "name": h.name, "this": h.this, "wants": wants })
        })
        .collect();
    Ok(Json(json!({
        "host": crate::metrics::host(),
        "shared": shared.store.lease_time().is_some(),
        "hosts": hosts,
        "leases": shared.store.leases().await?,
        "components": shared.store.published().await?,
    })))
}
