//! Invoice analytics view (seed 001): per organization and month, how many invoices were
//! created, paid and cancelled, and the amounts invoiced and paid in cents per currency.
//!
//! The organization comes from the metadata, as in the seeds (paid and cancelled events do not
//! carry it in their data), or else from an `InvoiceCreated`'s data. Events with neither (seed
//! 001's metadata has only `userId` and `correlationId`) are counted per month alone, under the id
//! `<month>`. An `InvoicePaid` adds to the paid amounts only when it carries `amount` and
//! `currency`.

use refold_projections_sdk::{Context, Event, Manifest, Projection, Result, Update, export_projection};
use serde::Deserialize;

struct InvoiceAnalytics;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Organization {
    #[serde(default)]
    organization_id: Option<String>,
}

#[derive(Deserialize)]
struct Amount {
    amount: f64,
    currency: String,
}

#[derive(Deserialize)]
struct MaybeAmount {
    #[serde(default)]
    amount: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
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
        let mut organization = event.metadata::<Organization>()?.organization_id;
        if organization.is_none() && event.event_type() == "InvoiceCreated" {
            organization = event.data::<Organization>()?.organization_id;
        }
        let month = &refold_projections_sdk::iso8601_millis(event.timestamp_ms())[..7];
        let (id, base) = match &organization {
            Some(organization) => (
                format!("{organization}:{month}"),
                Update::new().set("organizationId", organization).set("month", month),
            ),
            None => (month.to_owned(), Update::new().set("month", month)),
        };
        let update = match event.event_type() {
            "InvoiceCreated" => {
                let data: Amount = event.data()?;
                base.inc("created", 1).inc(&format!("invoicedCents.{}", data.currency), cents(data.amount))
            }
            "InvoicePaid" => match event.data::<MaybeAmount>()? {
                MaybeAmount { amount: Some(amount), currency: Some(currency) } => {
                    base.inc("paid", 1).inc(&format!("paidCents.{currency}"), cents(amount))
                }
                _ => base.inc("paid", 1),
            },
            "InvoiceCancelled" => base.inc("cancelled", 1),
            _ => return Ok(()),
        };
        ctx.collection("monthly").update(&id, update)
    }
}

export_projection!(InvoiceAnalytics);
