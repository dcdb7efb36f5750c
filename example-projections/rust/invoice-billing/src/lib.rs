//! Invoice billing view (seed 001): one document per invoice with its customer, amount, due
//! date, status and the dates it was sent, paid or cancelled.

use refold_projections_sdk::{Context, Error, Event, Manifest, Projection, Result, Update, export_projection};
use serde::Deserialize;

struct InvoiceBilling;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    organization_id: String,
    customer: serde_json::Value,
    amount: f64,
    currency: String,
    lines: Vec<serde_json::Value>,
    due_date: serde_json::Value,
}

#[derive(Deserialize)]
struct Cancelled {
    reason: String,
}

impl Projection for InvoiceBilling {
    fn manifest() -> Manifest {
        Manifest::new("invoice-billing", 1)
            .event_types(&["InvoiceCreated", "InvoiceSent", "InvoicePaid", "InvoiceCancelled"])
            .collection("invoices")
            .index("invoices", "by_organization_status", &["organizationId", "status"])
            .index("invoices", "by_due_date", &["dueDate"])
    }

    fn handle(ctx: &mut Context, event: &Event) -> Result<()> {
        let invoices = ctx.collection("invoices");
        let id = event.aggregate_id();
        let update = match event.event_type() {
            "InvoiceCreated" => {
                let data: Created = event.data()?;
                Update::new()
                    .set("invoiceId", id)
                    .set("organizationId", data.organization_id)
                    .set("customer", data.customer)
                    .set("amount", data.amount)
                    .set("currency", data.currency)
                    .set("lineCount", data.lines.len())
                    .set("dueDate", data.due_date)
                    .set("status", "draft")
                    .set("issuedAt", event.timestamp())
            }
            "InvoiceSent" => Update::new().set("status", "sent").set("sentAt", event.timestamp()),
            "InvoicePaid" => Update::new().set("status", "paid").set("paidAt", event.timestamp()),
            "InvoiceCancelled" => {
                let data: Cancelled = event.data()?;
                Update::new()
                    .set("status", "cancelled")
                    .set("cancelledAt", event.timestamp())
                    .set("cancellationReason", data.reason)
            }
            _ => return Ok(()),
        };
        if event.event_type() == "InvoiceCreated" {
            invoices.update(id, update)?;
        } else if !invoices.update_existing(id, update)? {
            return Err(Error::invalid_state(format!("{} for unknown invoice {id}", event.event_type())));
        }
        Ok(())
    }
}

export_projection!(InvoiceBilling);
