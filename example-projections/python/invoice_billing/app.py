"""Invoice billing view (seed 001), in Python: one document per invoice through its lifecycle
(draft, sent, paid, cancelled)."""

from refold import Projection, ProjectionError, Update, collection, manifest


class WitWorld(Projection):
    manifest = manifest(
        "invoice-billing",
        1,
        event_types=["InvoiceCreated", "InvoiceSent", "InvoicePaid", "InvoiceCancelled"],
        collections={
            "invoices": [
                {"name": "by_organization_status", "fields": ["organizationId", "status"]},
                {"name": "by_due_date", "fields": ["dueDate"]},
            ],
        },
    )

    def on_event(self, event):
        invoices, id = collection("invoices"), event.aggregate_id
        if event.event_type == "InvoiceCreated":
            data = event.data
            update = (
                Update()
                .set("invoiceId", id)
                .set("organizationId", data["organizationId"])
                .set("customer", data["customer"])
                .set("amount", float(data["amount"]))
                .set("currency", data["currency"])
                .set("lineCount", len(data["lines"]))
                .set("dueDate", data["dueDate"])
                .set("status", "draft")
                .set("issuedAt", event.timestamp)
            )
            invoices.update(id, update)
            return
        if event.event_type == "InvoiceSent":
            update = Update().set("status", "sent").set("sentAt", event.timestamp)
        elif event.event_type == "InvoicePaid":
            update = Update().set("status", "paid").set("paidAt", event.timestamp)
        elif event.event_type == "InvoiceCancelled":
            update = Update().set("status", "cancelled").set("cancelledAt", event.timestamp)
            update.set("cancellationReason", event.data["reason"])
        else:
            return
        if not invoices.update_existing(id, update):
            raise ProjectionError("invalid-state", f"{event.event_type} for unknown invoice {id}")
