//! Invoice billing view (seed 001): one document per invoice with its customer, amount, due
//! date, status and the dates it was sent, paid or cancelled.
//!
//! An `InvoiceCreated` needs only its `amount` and `currency`. It may carry its lines as `lines`
//! or as `items` (seed 001), its customer as a `customer` document and/or a `customerId`, and its
//! organization in its data or its metadata; what it leaves out is left out of the document.

use refold_projections_sdk::{Context, Error, Event, Manifest, Projection, Result, Update, export_projection};
use serde::Deserialize;

struct InvoiceBilling;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    customer: Option<serde_json::Value>,
    #[serde(default)]
    customer_id: Option<String>,
    amount: f64,
    currency: String,
    #[serde(default)]
    lines: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    items: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    due_date: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    organization_id: Option<String>,
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
                let meta: Metadata = event.metadata()?;
                let mut update = Update::new().set("invoiceId", id);
                if let Some(organization) = data.organization_id.or(meta.organization_id) {
                    update = update.set("organizationId", organization);
                }
                if let Some(customer) = data.customer.filter(|c| !c.is_null()) {
                    update = update.set("customer", customer);
                }
                if let Some(customer_id) = data.customer_id {
                    update = update.set("customerId", customer_id);
                }
                let lines = data.lines.or(data.items).map_or(0, |l| l.len());
                update = update
                    .set("amount", data.amount)
                    .set("currency", data.currency)
                    .set("lineCount", lines);
                if let Some(due_date) = data.due_date.filter(|d| !d.is_null()) {
                    update = update.set("dueDate", due_date);
                }
                update.set("status", "draft").set("issuedAt", event.timestamp())
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
