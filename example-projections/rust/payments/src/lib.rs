//! Payment read model and per-organization payment statistics (seed 000).
//!
//! - `payments`: one document per payment: amount, currency, status (`completed`/`failed`),
//!   the organization and user, when it was processed, the last error and how many attempts.
//!   A `PaymentFailed` needs only its `error` (seed 000's handler reads nothing else); its
//!   `amount` and `currency` are kept when present, and otherwise left as they were.
//! - `org_stats`: one document per organization: processed and failed counts, and the processed
//!   amount per currency in cents (integers, so totals are exact).

use refold_projections_sdk::{Context, Event, Manifest, Projection, Result, Update, export_projection};
use serde::Deserialize;

struct Payments;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    organization_id: String,
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct Processed {
    amount: f64,
    currency: String,
    #[serde(default)]
    method: Option<String>,
}

#[derive(Deserialize)]
struct Failed {
    #[serde(default)]
    amount: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
    error: String,
}

fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

impl Projection for Payments {
    fn manifest() -> Manifest {
        Manifest::new("payments", 1)
            .event_types(&["PaymentProcessed", "PaymentFailed"])
            .collection("payments")
            .index("payments", "by_organization", &["organizationId", "-processedAt"])
            .index("payments", "by_status", &["status", "-processedAt"])
            .collection("org_stats")
    }

    fn handle(ctx: &mut Context, event: &Event) -> Result<()> {
        let meta: Metadata = event.metadata()?;
        let payment = Update::new()
            .set("paymentId", event.aggregate_id())
            .set("organizationId", &meta.organization_id)
            .set("userId", &meta.user_id)
            .set_date("updatedAt", event.timestamp_ms())
            .inc("attempts", 1);
        match event.event_type() {
            "PaymentProcessed" => {
                let data: Processed = event.data()?;
                let payment = payment
                    .set("amount", data.amount)
                    .set("currency", &data.currency)
                    .set("method", &data.method)
                    .set("status", "completed")
                    .set_date("processedAt", event.timestamp_ms());
                ctx.collection("payments").update(event.aggregate_id(), payment)?;
                let stats = Update::new()
                    .set("organizationId", &meta.organization_id)
                    .inc("processedCount", 1)
                    .inc(&format!("processedCents.{}", data.currency), cents(data.amount));
                ctx.collection("org_stats").update(&meta.organization_id, stats)?;
            }
            "PaymentFailed" => {
                let data: Failed = event.data()?;
                let mut payment = payment;
                if let Some(amount) = data.amount {
                    payment = payment.set("amount", amount);
                }
                if let Some(currency) = &data.currency {
                    payment = payment.set("currency", currency);
                }
                // Shown by `refold trace` beside the change it explains.
                refold_projections_sdk::log::debug(&format!(
                    "{} failed: {}",
                    event.aggregate_id(),
                    data.error
                ));
                let payment = payment
                    .set("status", "failed")
                    .set("error", &data.error);
                ctx.collection("payments").update(event.aggregate_id(), payment)?;
                let stats = Update::new()
                    .set("organizationId", &meta.organization_id)
                    .inc("failedCount", 1)
                    .inc(&format!("failuresByReason.{}", data.error), 1);
                ctx.collection("org_stats").update(&meta.organization_id, stats)?;
            }
            _ => {}
        }
        Ok(())
    }
}

export_projection!(Payments);
