"""Invoice analytics view (seed 001), in Python: per organization and month, invoices created,
paid and cancelled, and amounts in cents per currency. The organization comes from the metadata,
else an InvoiceCreated's data; without one an event counts under its month alone."""

from refold import Projection, Update, cents, collection, manifest


class WitWorld(Projection):
    manifest = manifest(
        "invoice-analytics",
        1,
        event_types=["InvoiceCreated", "InvoicePaid", "InvoiceCancelled"],
        collections={"monthly": [{"name": "by_month", "fields": ["month", "organizationId"]}]},
    )

    def on_event(self, event):
        organization, month = event.metadata.get("organizationId"), event.iso8601[:7]
        if organization is None and event.event_type == "InvoiceCreated":
            organization = event.data.get("organizationId")
        update = Update()
        if organization is not None:
            update.set("organizationId", organization)
        update.set("month", month)
        if event.event_type == "InvoiceCreated":
            data = event.data
            update.inc("created", 1).inc(f"invoicedCents.{data['currency']}", cents(data["amount"]))
        elif event.event_type == "InvoicePaid":
            data = event.data
            update.inc("paid", 1)
            if data.get("amount") is not None and data.get("currency") is not None:
                update.inc(f"paidCents.{data['currency']}", cents(data["amount"]))
        elif event.event_type == "InvoiceCancelled":
            update.inc("cancelled", 1)
        else:
            return
        key = month if organization is None else f"{organization}:{month}"
        collection("monthly").update(key, update)
