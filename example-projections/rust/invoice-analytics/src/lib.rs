//! Invoice analytics view (seed 001): per organization and month, how many invoices were
//! created, paid and cancelled, and the amounts invoiced and paid in cents per currency.
//!
//! Paid and cancelled events do not carry the organization in their data; it comes from the
//! metadata, as in the seeds.

use refold_projections_sdk::{Context, Event, Manifest, Projection, Result, Update, export_projection};
use serde::Deserialize;

struct InvoiceAnalytics;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    organization_id: String,
}

#[derive(Deserialize)]
struct Amount {
    amount: f64,
    currency: String,
}

fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

impl Projection for InvoiceAnalytics {
    fn manifest() -> Manifest {
        Manifest::new("invoice-analytics", 1)
            .event_types(&["InvoiceCreated", "InvoicePaid", "InvoiceCancelled"])
            .collection("monthly")
            .index("monthly", "by_month", &["month", "organizationId"])
    }

    fn handle(ctx: &mut Context, event: &Event) -> Result<()> {
        let meta: Metadata = event.metadata()?;
        let month = &refold_projections_sdk::iso8601_millis(event.timestamp_ms())[..7];
        let id = format!("{}:{month}", meta.organization_id);
        let base = Update::new().set("organizationId", &meta.organization_id).set("month", month);
        let update = match event.event_type() {
            "InvoiceCreated" => {
                let data: Amount = event.data()?;
                base.inc("created", 1).inc(&format!("invoicedCents.{}", data.currency), cents(data.amount))
            }
            "InvoicePaid" => {
                let data: Amount = event.data()?;
                base.inc("paid", 1).inc(&format!("paidCents.{}", data.currency), cents(data.amount))
            }
            "InvoiceCancelled" => base.inc("cancelled", 1),
            _ => return Ok(()),
        };
        ctx.collection("monthly").update(&id, update)
    }
}

export_projection!(InvoiceAnalytics);
