//! The upcaster from seed 000's `PaymentProcessed` to its v2, `PaymentSettled`.
//!
//! v1 (what the PHP service records): `{"amount": 12.5, "currency": "EUR", "method": "card"}`,
//! the amount a float in the currency's unit, the method optional.
//!
//! v2 (what the new service records): `{"amount": {"cents": 1250, "currency": "EUR"},
//! "method": "card"}`, the amount an integer number of cents beside its currency, and the
//! method `"unknown"` when v1 did not say. The metadata is kept as it is.
//!
//! Written on wit-bindgen directly: the upcaster world is two functions.

// The world `use`s `event`, `upcast-event` and `upcaster-manifest`: they are in scope here.
wit_bindgen::generate!({
    path: "../../../wit",
    world: "refold:projection/upcaster",
});

use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Processed {
    amount: f64,
    currency: String,
    #[serde(default)]
    method: Option<String>,
}

struct PaymentSettled;

impl Guest for PaymentSettled {
    fn describe() -> UpcasterManifest {
        UpcasterManifest {
            name: "payment-settled".into(),
            event_types: vec!["PaymentProcessed".into()],
            produces: vec!["PaymentSettled".into()],
        }
    }

    fn upcast(event: Event) -> Result<Vec<UpcastEvent>, String> {
        let v1: Processed = serde_json::from_str(&event.data)
            .map_err(|e| format!("PaymentProcessed of {} is not v1: {e}", event.aggregate_id))?;
        if !v1.amount.is_finite() {
            return Err(format!("PaymentProcessed of {}: the amount is not a number", event.aggregate_id));
        }
        let v2 = json!({
            "amount": { "cents": (v1.amount * 100.0).round() as i64, "currency": v1.currency },
            "method": v1.method.as_deref().unwrap_or("unknown"),
        });
        Ok(vec![UpcastEvent {
            event_type: "PaymentSettled".into(),
            data: v2.to_string(),
            metadata: event.metadata,
        }])
    }
}

export!(PaymentSettled);
