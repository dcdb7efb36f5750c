"""Invoice analytics view (seed 001), in Python: per organization and month, invoices created,
paid and cancelled, and amounts in cents per currency."""

from refold import Projection, Update, cents, collection, manifest


class WitWorld(Projection):
    manifest = manifest(
        "invoice-analytics",
        1,
        event_types=["InvoiceCreated", "InvoicePaid", "InvoiceCancelled"],
        collections={"monthly": [{"name": "by_month", "fields": ["month", "organizationId"]}]},
    )

    def on_event(self, event):
        organization, month = event.metadata["organizationId"], event.iso8601[:7]
        update = Update().set("organizationId", organization).set("month", month)
        if event.event_type == "InvoiceCreated":
            data = event.data
            update.inc("created", 1).inc(f"invoicedCents.{data['currency']}", cents(data["amount"]))
        elif event.event_type == "InvoicePaid":
            data = event.data
            update.inc("paid", 1).inc(f"paidCents.{data['currency']}", cents(data["amount"]))
        elif event.event_type == "InvoiceCancelled":
            update.inc("cancelled", 1)
        else:
            return
        collection("monthly").update(f"{organization}:{month}", update)
