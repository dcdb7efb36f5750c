//! What upcasting costs on a replay: the `settlements` example over the log's v1
//! `PaymentProcessed` events, behind the `payment-settled` upcaster, against the same projection
//! over the same events recorded as v2 (`PaymentSettled`, rewritten natively into a second store)
//! with no upcaster. Both must build the same read model.

use std::path::Path;
use std::sync::Arc;

use refold::domain::json_object::JsonObject;
use refold::engine::{Engine, Loaded};
use refold::projector::{Chain, Handler, Upcasted, Upcaster};
use refold::store::{self, ImportBatch, ImportedEvent, Store};
use serde::Serialize;
use serde_json::json;

use crate::replay::{self, Replay};

/// The two replays and their ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Upcasting {
    /// `settlements` over v1 events, behind the upcaster.
    pub behind_upcaster: Replay,
    /// `settlements` over the same events recorded as v2.
    pub recorded_v2: Replay,
    /// Seconds behind the upcaster over seconds without.
    pub time_ratio: f64,
}

/// Copy `from`'s log into `to` with every `PaymentProcessed` rewritten as the upcaster would.
async fn rewrite_as_v2(from: &Arc<dyn Store>, to: &Arc<dyn Store>) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = from.read_all(after, 5_000, &Default::default()).await?;
        if page.scanned_to == after {
            to.import(ImportBatch::default().last()).await?;
            return Ok(());
        }
        after = page.scanned_to;
        let mut events = Vec::with_capacity(page.events.len());
        for event in page.events {
            let (event_type, data) = if event.event_type == "PaymentProcessed" {
                let v1: serde_json::Value = serde_json::from_str(&event.data)?;
                let cents = (v1["amount"].as_f64().unwrap_or_default() * 100.0).round() as i64;
                let v2 = json!({
                    "amount": { "cents": cents, "currency": v1["currency"] },
                    "method": v1["method"].as_str().unwrap_or("unknown"),
                });
                ("PaymentSettled".to_owned(), v2.to_string())
            } else {
                (event.event_type, event.data)
            };
            let object = |text: &str| match JsonObject::parse(text) {
                Some(object) => anyhow::Ok(object),
                None => Ok(JsonObject::from_value(&serde_json::from_str(text)?)?),
            };
            events.push(ImportedEvent {
                aggregate_id: event.aggregate_id,
                version: event.version,
                id: Some(event.id),
                aggregate_type: event.aggregate_type,
                event_type,
                timestamp_ms: event.timestamp_ms,
                event_data: object(&data)?,
                metadata: object(&event.metadata)?,
                origin: format!("position {}", event.position),
            });
        }
        to.import(ImportBatch::new(events)?).await?;
    }
}

/// Build the example, replay both ways, and check the read models are the same.
pub async fn compare(
    root: &Path,
    dir: &Path,
    engine: &Arc<Engine>,
    (v1, v1_db): (&Arc<dyn Store>, &Path),
) -> anyhow::Result<Upcasting> {
    let guests = dir.join("upcasting");
    refold::guest_build::build_rust(&root.join("example-projections/upcasting"), &guests)?;
    let load = |file: &str| -> anyhow::Result<Loaded> {
        Ok(engine.load_any(&std::fs::read(guests.join(file))?)?)
    };
    let (Loaded::Projection(settlements), Loaded::Upcaster(upcaster)) =
        (load("settlements.wasm")?, load("payment_settled.wasm")?)
    else {
        anyhow::bail!("the upcasting example did not build a projection and an upcaster");
    };
    let settlements: Arc<dyn Handler> = Arc::new(settlements);
    let chain = Chain::new(vec![Arc::new(upcaster) as Arc<dyn Upcaster>])?;

    let v2_db = dir.join("bench-v2.db");
    let v2 = store::open(&format!("sqlite://{}", v2_db.display())).await?;
    rewrite_as_v2(v1, &v2).await?;

    let behind = Upcasted::wrap(Arc::clone(&settlements), &chain);
    let (behind_upcaster, s) =
        replay::replay(v1, behind, "settlements, v1 events behind the upcaster").await?;
    s.shutdown().await;
    let (recorded_v2, s) = replay::replay(&v2, settlements, "settlements, v2 events").await?;
    s.shutdown().await;
    for collection in ["settlements", "org_totals"] {
        let table = format!("settlements__g1__{collection}");
        let upcast = crate::table(v1_db, &table)?;
        let native = crate::table(&v2_db, &table)?;
        anyhow::ensure!(
            !upcast.is_empty() && upcast == native,
            "settlements/{collection} differs behind the upcaster and over v2 events"
        );
    }
    Ok(Upcasting {
        time_ratio: behind_upcaster.seconds / recorded_v2.seconds,
        behind_upcaster,
        recorded_v2,
    })
}
