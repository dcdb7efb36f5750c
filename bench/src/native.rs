//! The payment read model compiled natively, twice: as a [`Handler`] that runs through the same
//! projector as a guest (the difference is the wasm boundary and the guest's code), and as a raw
//! loop that reads pages of events and commits the same documents straight into the store with
//! the same batching and transactions (the store's limit for this workload).
//!
//! Both give documents identical to the Rust guest's (`example-projections/rust/payments`); the
//! benchmark checks that before it reports.

use std::collections::HashMap;
use std::sync::Arc;

use refold::domain::update::{FieldUpdate, Operator};
use refold::domain::{
    CollectionSpec, EventFilter, Generation, Manifest, Position, RecordedEvent, time,
};
use refold::projector::{BatchContext, HandleFailure, Handler};
use refold::store::{BatchWrites, Store};
use serde_json::{Map, Value, json};

fn manifest(name: &str, collections: &[&str], event_types: &[&str]) -> Manifest {
    Manifest {
        name: name.into(),
        version: 1,
        event_types: event_types.iter().map(|s| (*s).into()).collect(),
        aggregate_types: vec![],
        collections: collections
            .iter()
            .map(|c| CollectionSpec {
                name: (*c).into(),
                indexes: vec![],
            })
            .collect(),
        batch_size: None,
        failure_policy: None,
    }
}

const PAYMENT_EVENTS: [&str; 2] = ["PaymentProcessed", "PaymentFailed"];

fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

fn date(ms: i64) -> Value {
    json!({ "$date": time::iso8601_millis(ms) })
}

/// The two updates the payment projection makes for one event: (payments, org_stats), with the
/// organization id. `None` for other events or malformed ones.
pub(crate) fn payment_updates(event: &RecordedEvent) -> Option<(Value, String, Value)> {
    let meta: Value = serde_json::from_str(&event.metadata).ok()?;
    let data: Value = serde_json::from_str(&event.data).ok()?;
    let organization = meta["organizationId"].as_str()?.to_owned();
    // A failure may carry its error alone (seed 000): amount and currency are kept when present.
    let (amount, currency) = (data["amount"].as_f64(), data["currency"].as_str());
    let mut set = json!({
        "paymentId": event.aggregate_id, "organizationId": organization,
        "userId": meta.get("userId").cloned().unwrap_or(Value::Null),
        "updatedAt": date(event.timestamp_ms),
    });
    let fields = set.as_object_mut()?;
    let stats = match event.event_type.as_str() {
        "PaymentProcessed" => {
            let (amount, currency) = (amount?, currency?);
            fields.insert("amount".into(), json!(amount));
            fields.insert("currency".into(), json!(currency));
            fields.insert(
                "method".into(),
                data.get("method").cloned().unwrap_or(Value::Null),
            );
            fields.insert("status".into(), json!("completed"));
            fields.insert("processedAt".into(), date(event.timestamp_ms));
            json!({ "$set": { "organizationId": organization }, "$inc": { "processedCount": 1, format!("processedCents.{currency}"): cents(amount) } })
        }
        "PaymentFailed" => {
            let error = data["error"].as_str()?;
            if let Some(amount) = amount {
                fields.insert("amount".into(), json!(amount));
            }
            if let Some(currency) = currency {
                fields.insert("currency".into(), json!(currency));
            }
            fields.insert("status".into(), json!("failed"));
            fields.insert("error".into(), json!(error));
            json!({ "$set": { "organizationId": organization }, "$inc": { "failedCount": 1, format!("failuresByReason.{error}"): 1 } })
        }
        _ => return None,
    };
    let payment = json!({ "$set": set, "$inc": { "attempts": 1 } });
    Some((payment, organization, stats))
}

/// An update object's operators one by one, as a guest's `update-fields` gives them.
fn fields(update: Value) -> Vec<FieldUpdate> {
    let Value::Object(operators) = update else {
        return Vec::new();
    };
    operators
        .into_iter()
        .filter_map(|(name, fields)| match fields {
            Value::Object(fields) => Some((Operator::from_name(&name)?, fields)),
            _ => None,
        })
        .flat_map(|(operator, fields)| {
            fields.into_iter().map(move |(path, value)| FieldUpdate {
                operator,
                path,
                value,
            })
        })
        .collect()
}

/// The payment projection as native code behind the [`Handler`] boundary: it builds the same
/// update operators as the guest and hands them to the same batch context one by one, as the
/// Rust SDK does.
pub struct NativePayments {
    manifest: Manifest,
}

impl NativePayments {
    /// Under a projection name of its own.
    pub fn new(name: &str) -> Self {
        Self {
            manifest: manifest(name, &["payments", "org_stats"], &PAYMENT_EVENTS),
        }
    }
}

impl Handler for NativePayments {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn code_hash(&self) -> &str {
        "native-payments"
    }

    fn handle(
        &self,
        events: &[RecordedEvent],
        mut context: BatchContext,
    ) -> (BatchContext, Result<(), HandleFailure>) {
        for event in events {
            context.set_position(event.position);
            let Some((payment, organization, stats)) = payment_updates(event) else {
                continue;
            };
            let written = context
                .update_fields("payments", &event.aggregate_id, fields(payment), true)
                .and_then(|_| {
                    context.update_fields("org_stats", &organization, fields(stats), true)
                });
            if let Err(failure) = written {
                let failure = HandleFailure::Guest {
                    position: Some(event.position),
                    kind: "other".into(),
                    message: failure.to_string(),
                };
                return (context, Err(failure));
            }
        }
        (context, Ok(()))
    }
}

/// A projection that does nothing, natively: the projector's own cost.
pub struct NativeNoop {
    manifest: Manifest,
}

impl NativeNoop {
    /// Under a projection name of its own.
    pub fn new(name: &str) -> Self {
        Self {
            manifest: manifest(name, &["nothing"], &PAYMENT_EVENTS),
        }
    }
}

impl Handler for NativeNoop {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn code_hash(&self) -> &str {
        "native-noop"
    }

    fn handle(
        &self,
        _: &[RecordedEvent],
        context: BatchContext,
    ) -> (BatchContext, Result<(), HandleFailure>) {
        (context, Ok(()))
    }
}

/// Apply `$set` and `$inc` to a document in place (all the payment projection uses).
pub(crate) fn apply(document: &mut Map<String, Value>, update: &Value) {
    if let Some(set) = update["$set"].as_object() {
        for (k, v) in set {
            document.insert(k.clone(), v.clone());
        }
    }
    if let Some(inc) = update["$inc"].as_object() {
        for (path, by) in inc {
            let (head, tail) = match path.split_once('.') {
                Some((head, tail)) => (head, Some(tail)),
                None => (path.as_str(), None),
            };
            let slot = match tail {
                None => document.entry(head.to_owned()).or_insert(json!(0)),
                Some(tail) => {
                    let parent = document.entry(head.to_owned()).or_insert_with(|| json!({}));
                    match parent.as_object_mut() {
                        Some(parent) => parent.entry(tail.to_owned()).or_insert(json!(0)),
                        None => continue,
                    }
                }
            };
            *slot = json!(slot.as_i64().unwrap_or(0) + by.as_i64().unwrap_or(0));
        }
    }
}

/// The raw loop: pages of `batch` payment events by position, documents read once and kept in
/// memory, every page's changed documents and the checkpoint committed in one store
/// transaction. Returns the events handled.
pub async fn raw_replay(store: &Arc<dyn Store>, name: &str, batch: usize) -> anyhow::Result<u64> {
    let manifest = manifest(name, &["payments", "org_stats"], &PAYMENT_EVENTS);
    let mut generation: Generation = store
        .create_generation(&manifest, "native-raw", &[], None)
        .await?;
    generation.collections = vec!["payments".into(), "org_stats".into()];
    store.prepare_collections(&generation, &manifest).await?;
    let filter: EventFilter = manifest.filter();
    let mut reader = store.reader(&generation)?;
    let mut cache: HashMap<(&'static str, String), Map<String, Value>> = HashMap::new();
    let head = store.head().await?;
    let (mut checkpoint, mut handled): (Position, u64) = (0, 0);
    while checkpoint < head {
        let page = store.read_all(checkpoint, batch, &filter).await?;
        let mut dirty: Vec<(&'static str, String)> = Vec::new();
        for event in &page.events {
            let Some((payment, organization, stats)) = payment_updates(event) else {
                continue;
            };
            for (collection, id, update) in [
                ("payments", event.aggregate_id.clone(), payment),
                ("org_stats", organization, stats),
            ] {
                let key = (collection, id);
                if !cache.contains_key(&key) {
                    let found = tokio::task::block_in_place(|| reader.get(collection, &key.1))?;
                    let mut document = found.unwrap_or_default();
                    document.insert("_id".into(), json!(key.1));
                    cache.insert(key.clone(), document);
                }
                if let Some(document) = cache.get_mut(&key) {
                    apply(document, &update);
                }
                dirty.push(key);
            }
            handled += 1;
        }
        dirty.sort();
        dirty.dedup();
        let documents = dirty
            .into_iter()
            .map(|key| {
                let document = cache.get(&key).cloned().map(Arc::new);
                (key.0.to_owned(), key.1, document)
            })
            .collect();
        store
            .commit(
                &generation,
                BatchWrites {
                    documents,
                    ..BatchWrites::default()
                },
                checkpoint,
                page.scanned_to,
            )
            .await?;
        checkpoint = page.scanned_to;
        if cache.len() > 100_000 {
            cache.clear();
        }
    }
    Ok(handled)
}
