//! Settled payments, written against v2 events only (`PaymentSettled`). The history's v1
//! `PaymentProcessed` events reach it through the `payment-settled` upcaster, so old and new
//! payments are folded alike.
//!
//! - `settlements`: one document per payment: cents, currency, method, organization, when.
//! - `org_totals`: one document per organization: how many payments settled, and the cents
//!   settled per currency.

use refold_projections_sdk::{Context, Event, Manifest, Projection, Result, Update, export_projection};
use serde::Deserialize;

struct Settlements;

#[derive(Deserialize)]
struct Amount {
    cents: i64,
    currency: String,
}

#[derive(Deserialize)]
struct Settled {
    amount: Amount,
    method: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    organization_id: String,
}

impl Projection for Settlements {
    fn manifest() -> Manifest {
        Manifest::new("settlements", 1)
            .event_types(&["PaymentSettled"])
            .collection("settlements")
            .index("settlements", "by_organization", &["organizationId"])
            .collection("org_totals")
    }

    fn handle(ctx: &mut Context, event: &Event) -> Result<()> {
        let settled: Settled = event.data()?;
        let meta: Metadata = event.metadata()?;
        let payment = Update::new()
            .set("organizationId", &meta.organization_id)
            .set("cents", settled.amount.cents)
            .set("currency", &settled.amount.currency)
            .set("method", &settled.method)
            .set("settledAt", event.timestamp());
        ctx.collection("settlements").update(event.aggregate_id(), payment)?;
        let totals = Update::new()
            .set("organizationId", &meta.organization_id)
            .inc("settledCount", 1)
            .inc(&format!("cents.{}", settled.amount.currency), settled.amount.cents);
        ctx.collection("org_totals").update(&meta.organization_id, totals)?;
        Ok(())
    }
}

export_projection!(Settlements);
